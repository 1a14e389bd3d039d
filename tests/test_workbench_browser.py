"""The coder's web page in a real browser (Playwright driving Debian's chromium, headless, nothing downloaded).

A coder pastes a note, codes it, clicks a code and sees its evidence highlighted,
accepts one code, rejects one, adds one found by catalog search, exports the
coded note, and the three decisions are in the audit store.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import shutil
from pathlib import Path

import pytest
from conftest import SYNTHETIC_SOURCE, TrainedRun, live_server

pytest.importorskip("playwright", reason="playwright is not installed (pip install -c constraints.txt -e '.[dev]')")
from playwright.sync_api import expect, sync_playwright  # noqa: E402

import medcoder  # noqa: E402
from medcoder.data.synthetic import SyntheticSource, generate_notes  # noqa: E402
from medcoder.serve import ServeSettings, create_app  # noqa: E402
from medcoder.serve.audit import AuditStore, note_hash  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",  # the suite may run as root
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",  # the machine has no network: no calls home
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (scripts/system-deps.sh installs it)"
)


def _browser(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)


def test_a_coder_codes_a_note_in_the_browser(synthetic_run: TrainedRun, tmp_path: Path) -> None:
    from medcoder.html_report import write_html_report

    bundle = synthetic_run.copy_bundle(tmp_path / "model")
    write_html_report(bundle)  # the model tab shows it
    coder = medcoder.load(bundle)
    source = SyntheticSource(**{k: v for k, v in SYNTHETIC_SOURCE.items() if k != "kind"})
    notes = [n for n in generate_notes(source) if n.split == "test"]
    # a note whose listed codes give at least two evidence spans to the second code
    text, expected = None, None
    for note in notes:
        [prediction] = coder.predict([note.text], top_k=15, explain=True)
        if len(prediction.codes) >= 3 and len(prediction.codes[1].evidence or []) >= 2:
            text, expected = note.text, prediction
            break
    assert text is not None, "no synthetic test note with two evidence spans"
    audit = AuditStore(f"sqlite:///{tmp_path / 'audit.sqlite'}")
    app = create_app(coder, ServeSettings(), audit=audit)
    shots = Path(os.environ.get("MEDCODER_SCREENSHOTS", tmp_path))

    with live_server(app) as url, sync_playwright() as playwright:
        browser = _browser(playwright)
        page = browser.new_page(viewport={"width": 1440, "height": 900}, accept_downloads=True)
        page.goto(url)
        expect(page.locator("#coder")).to_have_text(getpass.getuser() or "local")
        page.fill("#note-text", text)
        page.fill("#note-id", "note-42")
        page.focus("#note-text")
        page.keyboard.press("Control+Enter")  # the keyboard way to the Code button
        items = page.locator("#codes li")
        expect(items.first).to_be_visible()
        listed = [items.nth(i).get_attribute("data-code") for i in range(items.count())]
        assert listed == [c.code for c in expected.codes]

        # clicking a code highlights every evidence span of it; the strongest is outlined
        second = expected.codes[1]
        items.nth(1).locator(".code-main").click()
        marks = page.locator("#note-view mark")
        expect(marks).to_have_count(len({(e.start, e.end) for e in second.evidence}))
        by_position = sorted(second.evidence, key=lambda e: e.start)
        assert [marks.nth(i).inner_text() for i in range(marks.count())] == [e.text for e in by_position]
        strongest = page.locator("#note-view mark.strongest")
        assert strongest.inner_text() == second.evidence[0].text
        # where the mark sits in the note: the characters before it
        offset = page.evaluate(
            """() => { const view = document.getElementById('note-view'); const mark = view.querySelector('mark.strongest');
                 const range = document.createRange(); range.setStart(view, 0); range.setEndBefore(mark);
                 return range.toString().length; }"""
        )
        assert offset == second.evidence[0].start
        assert page.locator("#note-view").inner_text() == text
        page.screenshot(path=str(shots / "workbench_evidence.png"))

        # the keyboard moves the selection
        page.locator("#note-view").focus()
        page.keyboard.press("j")
        expect(items.nth(2).locator(".code-main")).to_have_attribute("aria-pressed", "true")
        page.keyboard.press("k")
        expect(items.nth(1).locator(".code-main")).to_have_attribute("aria-pressed", "true")

        # accept the first code, reject the second, add one through the catalog search
        first = expected.codes[0]
        items.nth(0).get_by_role("button", name=f"Accept {first.code}").click()
        expect(items.nth(0)).to_have_class(re.compile(r"\baccept\b"))
        items.nth(1).get_by_role("button", name=f"Reject {second.code}").click()
        expect(items.nth(1)).to_have_class(re.compile(r"\breject\b"))
        page.fill("#search-q", "heart failure")
        page.press("#search-q", "Enter")
        results = page.locator("#search-results li")
        expect(results.first).to_be_visible()
        added = next(
            code for i in range(results.count()) if (code := results.nth(i).get_attribute("data-code")) not in listed
        )
        page.locator(f'#search-results li[data-code="{added}"]').get_by_role("button", name=f"Add {added}").click()
        decisions = page.locator("#decisions li")
        expect(decisions).to_have_count(3)
        page.screenshot(path=str(shots / "workbench_decisions.png"))

        # export the coded note
        with page.expect_download() as download:
            page.click("#export-btn")
        exported = json.loads(Path(download.value.path()).read_text(encoding="utf-8"))
        assert exported["labels"] == [first.code, added]
        assert exported["note_hash"] == note_hash(text) and exported["text"] == text and exported["id"] == "note-42"
        decided = {c["code"]: c["decision"] for c in exported["codes"] if c["decision"]}
        assert decided == {first.code: "accept", second.code: "reject", added: "add"}

        # the model tab shows the served model
        page.click("#tab-model")
        expect(page.locator("#model-summary")).to_contain_text("tfidf_lr.v1")
        expect(page.locator("#panel-code")).to_be_hidden()
        report = page.frame_locator("#report-frame")
        expect(report.locator("h1")).to_contain_text("medcoder report")
        expect(report.locator("svg").first).to_be_visible()
        browser.close()

    rows = audit.rows()
    assert [(r["code"], r["action"]) for r in rows] == [(first.code, "accept"), (second.code, "reject"), (added, "add")]
    assert {r["coder"] for r in rows} == {getpass.getuser() or "local"}
    assert {r["note_id"] for r in rows} == {"note-42"} and {r["note_hash"] for r in rows} == {note_hash(text)}
    assert rows[0]["probability"] == pytest.approx(first.probability, abs=1e-6)
    assert rows[2]["probability"] is None  # a code the model did not list has no probability of its own


def test_the_page_signs_a_coder_in_with_a_token(synthetic_run: TrainedRun, tmp_path: Path) -> None:
    from medcoder.serve.auth import add_token

    token = add_token(tmp_path / "tokens.json", "alice")
    audit = AuditStore(f"sqlite:///{tmp_path / 'audit.sqlite'}")
    settings = ServeSettings(host="0.0.0.0", tokens_file=tmp_path / "tokens.json")  # served on loopback all the same
    app = create_app(medcoder.load(synthetic_run.bundle), settings, audit=audit)
    with live_server(app) as url, sync_playwright() as playwright:
        browser = _browser(playwright)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(url)
        dialog = page.locator("#token-dialog")
        expect(dialog).to_be_visible()  # the service asked for a token: the page asks the coder
        page.fill("#token-input", "not-a-token")
        page.click("#token-form button[value=ok]")
        expect(page.locator("#status")).to_have_text("unknown token")  # refused, and said why
        expect(dialog).to_be_visible()  # asked again
        page.fill("#token-input", token)
        page.click("#token-form button[value=ok]")
        expect(page.locator("#coder")).to_have_text("alice")
        page.fill("#note-text", "ASSESSMENT: essential hypertension.")
        page.click("#code-btn")
        first = page.locator("#codes li").first
        expect(first).to_be_visible()
        code = first.get_attribute("data-code")
        first.get_by_role("button", name=f"Accept {code}").click()
        expect(page.locator("#decisions li")).to_have_count(1)
        browser.close()
    [row] = audit.rows()
    assert row["coder"] == "alice" and row["code"] == code and row["action"] == "accept"
