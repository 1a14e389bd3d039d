"""Screenshots of the coder's workbench serving a real model, for docs/ (Playwright + Debian's chromium).

    python bench/workbench_screenshots.py --model runs/codiesp-tfidf-unigram --out docs

Serves MODEL on a free loopback port (audit in a temporary SQLite file), opens the page, pastes a
CodiEsp-D English test note, codes it, selects the first predicted code that has evidence, accepts it,
rejects the next, adds a code through the catalog search, and takes: workbench_coding.png (the note
with the evidence highlighted and the decisions) and workbench_model.png (the model tab with the
bundle's report.html, written by `medcoder report MODEL` first if it is missing).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
DATA = ROOT.parent / "shared" / "data" / "codiesp" / "diagnosis_en.jsonl"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"]
FLAGS += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "runs" / "codiesp-tfidf-unigram")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument("--note", type=int, default=3, help="Which CodiEsp test note (index).")
    args = parser.parse_args()

    from conftest import live_server  # the suite's loopback server helper
    from playwright.sync_api import expect, sync_playwright

    from medcoder.serve import ServeSettings, create_app
    from medcoder.serve.audit import AuditStore

    if not (args.model / "report.html").is_file():
        from medcoder.html_report import write_html_report

        write_html_report(args.model)
    records = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    note = [r for r in records if r.get("split") == "test"][args.note]
    audit = AuditStore(f"sqlite:///{Path(tempfile.mkdtemp()) / 'audit.sqlite'}")
    app = create_app(args.model, ServeSettings(), audit=audit)
    with live_server(app) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=FLAGS)
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(url)
        expect(page.locator("#model-version")).not_to_be_empty(timeout=120_000)  # the model and catalog are loaded
        page.fill("#note-id", str(note["id"]))
        page.fill("#note-text", note["text"])
        page.click("#code-btn")
        items = page.locator("#codes li")
        expect(items.first).to_be_visible(timeout=60_000)
        codes = [items.nth(i).get_attribute("data-code") for i in range(items.count())]
        gold = set(note["labels"])
        # as a coder with the gold codes in mind: accept the best-ranked gold code, reject the best-ranked other one
        page.click(f'#codes li[data-code="{next(c for c in codes if c in gold)}"] button.acc')
        page.click(f'#codes li[data-code="{next(c for c in codes if c not in gold)}"] button.rej')
        missed = sorted(gold - set(codes))  # a gold code the model did not list: found by its code
        page.fill("#search-q", missed[0] if missed else "heart failure")
        page.press("#search-q", "Enter")
        expect(page.locator("#search-results li").first).to_be_visible()
        page.locator("#search-results li button").first.click()
        expect(page.locator("#decisions li")).to_have_count(3)
        # show the evidence of the best-ranked code whose evidence is more than one span
        for i in range(items.count()):
            items.nth(i).locator(".code-main").click()
            if page.locator("#note-view mark").count() >= 2:
                break
        args.out.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.out / "workbench_coding.png"))
        page.click("#tab-model")
        expect(page.frame_locator("#report-frame").locator("table").first).to_be_visible(timeout=30_000)
        page.screenshot(path=str(args.out / "workbench_model.png"))
        browser.close()
    rows = audit.rows()
    print(f"note {note['id']}: gold {sorted(gold)}; listed {codes[:8]}...; decisions stored: {len(rows)}")
    for row in rows:
        print(f"  {row['coder']} {row['action']} {row['code']} p={row['probability']} {row['model_version']}")


if __name__ == "__main__":
    main()
