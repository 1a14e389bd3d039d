"""What the running service holds: the saved system and its catalog search, the inference pool, the audit
store, the tokens, and the probabilities of recently listed codes (kept for the audit)."""

from __future__ import annotations

import getpass
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from medcoder.data.labels import LabelSpace
from medcoder.errors import MedcoderError
from medcoder.evaluation.metrics import DEFAULT_FREQUENCY_BINS, frequency_bin_name
from medcoder.inference.base import Coder, CodeScore, NotePrediction, SystemInfo
from medcoder.serve.audit import AuditStore
from medcoder.serve.auth import TokenStore, User
from medcoder.serve.catalog import CodeSearch
from medcoder.serve.settings import ServeSettings
from medcoder.serve.work import InferencePool

logger = logging.getLogger("medcoder.serve")

_PROBABILITY_CACHE = 4096  # notes whose listed codes' probabilities are kept for the audit


@dataclass(frozen=True)
class CodeJob:
    """One ``POST /v1/code`` request, as the inference pool batches it."""

    texts: list[str]
    ids: list[str | None]
    top_k: int
    explain: bool


class ServiceState:
    """What the app holds once started (``app.state.medcoder``); the routes get it through ``serve.deps``."""

    def __init__(
        self, settings: ServeSettings, *, tokens: TokenStore | None = None, audit: AuditStore | None = None
    ) -> None:
        self.settings = settings
        self.tokens = tokens  # None: every request is the local user
        self.local_user = User(_local_name(), admin=True)
        self.audit = audit  # opened at start-up when not given
        self.pool: InferencePool | None = None  # open while the app runs
        self.coder: Coder | None = None
        self.search: CodeSearch | None = None
        # what GET /v1/model shows, read once the system is loaded
        self.info: SystemInfo | None = None
        self.label_summary: dict[str, Any] = {}
        self.metrics: dict[str, Any] = {}
        self.card: str | None = None
        self.error: str | None = None
        self.ready = threading.Event()
        self.probabilities: OrderedDict[str, dict[str, float]] = OrderedDict()
        self.lock = threading.Lock()
        # An app may run several lifespans at once (a test client and schemathesis's ASGI transport each start
        # one): what the first opens must outlive every other, or a request after one of them ends would wait
        # on a stopped pool.
        self._lifespans = 0
        self._own_audit = False
        self._loader: threading.Thread | None = None

    def open(self, model: str | Path | Coder) -> None:
        """A lifespan of the app starts: the first of those running opens the inference pool and the audit store
        (unless given); the system is loaded once, in a thread (``ready`` once done)."""
        settings = self.settings
        with self.lock:
            self._lifespans += 1
            if self._lifespans > 1:
                return
            self.pool = InferencePool(
                self.code_batch,
                workers=settings.workers,
                queue_size=settings.queue_size,
                batch_notes=settings.batch_notes,
            )
            if self.audit is None:
                self.audit, self._own_audit = AuditStore(settings.database_url), True
            if self._loader is None:
                self._loader = threading.Thread(target=self.start, args=(model,), name="medcoder-load", daemon=True)
                self._loader.start()

    def close(self) -> None:
        """A lifespan of the app ends: the last of those running stops the pool and closes the store it opened."""
        with self.lock:
            self._lifespans -= 1
            if self._lifespans:
                return
            pool, self.pool = self.pool, None
            audit = self.audit if self._own_audit else None  # a store given to create_app is the caller's
            if self._own_audit:
                self.audit, self._own_audit = None, False
        if pool is not None:
            pool.shutdown()
        if audit is not None:
            audit.close()

    def start(self, model: str | Path | Coder) -> None:
        """Load the system (unless given loaded) and build its catalog search; ``ready`` once done."""
        try:
            if isinstance(model, Coder):
                coder = model
            else:
                from medcoder.inference.load import load

                coder = load(model)
            if coder.needs_pairs:
                raise MedcoderError("this model codes sentence pairs; the workbench codes single notes")
            info = coder.info
            self.label_summary = _label_summary(coder, coder.label_space())
            self.metrics = _headline_metrics(info.test_metrics) if info.test_metrics else {}
            card = None if coder.path is None else coder.path / "README.md"
            self.card = (
                card.read_text(encoding="utf-8", errors="replace") if card is not None and card.is_file() else None
            )
            self.search = CodeSearch(coder, info.label_system)
            self.coder, self.info = coder, info
            logger.info(
                "serving %s (%d codes; catalog search over %d)", info.identity, len(coder.codes), len(self.search)
            )
        except MedcoderError as exc:
            self.error = str(exc)
            logger.error("cannot serve the model: %s", exc)
        finally:
            self.ready.set()

    @property
    def version(self) -> str:
        """The served system's identity: how the audit, responses and /v1/model name it ("" until loaded)."""
        return self.info.identity if self.info is not None else ""

    def code_batch(self, requests: Sequence[CodeJob]) -> list[list[NotePrediction]]:
        """Code the notes of several requests in one model call; each gets its own top_k and evidence back."""
        coder = self.coder
        assert coder is not None
        texts = [t for r in requests for t in r.texts]
        ids = [i for r in requests for i in r.ids]
        top_k = max(r.top_k for r in requests)
        explain = any(r.explain for r in requests)
        predictions = coder.predict(texts, ids=ids, top_k=top_k, explain=explain)
        out, at = [], 0
        for r in requests:
            mine = predictions[at : at + len(r.texts)]
            at += len(r.texts)
            if r.top_k < top_k or (explain and not r.explain):
                mine = [_trimmed(p, r.top_k, r.explain) for p in mine]
            out.append(mine)
        return out

    def remember(self, predictions: list[NotePrediction], digests: list[str]) -> None:
        """Keep the probabilities of the codes listed for each note (by its hash), for the decisions on it."""
        with self.lock:
            for prediction, digest in zip(predictions, digests, strict=True):
                listed = {c.code: c.probability for c in [*prediction.codes, *(prediction.new_codes or [])]}
                self.probabilities[digest] = {**self.probabilities.pop(digest, {}), **listed}
            while len(self.probabilities) > _PROBABILITY_CACHE:
                self.probabilities.popitem(last=False)

    def probability(self, digest: str, code: str) -> float | None:
        """The model's probability of ``code`` when it was listed for the note ``digest`` (None: not recently)."""
        with self.lock:
            return self.probabilities.get(digest, {}).get(code)


def _trimmed(prediction: NotePrediction, top_k: int, explain: bool) -> NotePrediction:
    """``prediction`` as a call with this ``top_k`` and ``explain`` would have given it."""

    def keep(codes: list[CodeScore] | None, cut: bool) -> list[CodeScore] | None:
        if codes is None:
            return None
        kept = [c for c in codes if not cut or c.predicted or c.rank <= top_k]
        return kept if explain else [replace(c, evidence=None) for c in kept]

    return replace(prediction, codes=keep(prediction.codes, True), new_codes=keep(prediction.new_codes, False))


def _headline_metrics(test: dict[str, Any]) -> dict[str, Any]:
    """Test figures for the model tab: the numbers of each section (a model's all-gold and train-seen ones)."""

    def numbers(section: Any) -> dict[str, Any]:
        return {k: v for k, v in section.items() if isinstance(v, int | float)} if isinstance(section, dict) else {}

    if "all_gold" in test:
        return {"test (all gold)": numbers(test["all_gold"]), "test (train-seen)": numbers(test.get("train_seen"))}
    return {"test": numbers(test)}


def _label_summary(coder: Coder, labels: LabelSpace | None) -> dict[str, Any]:
    """The label space in a few figures: catalog, level, filters, train notes, codes by train frequency."""
    summary: dict[str, Any] = {"n_codes": len(coder.codes)}
    if labels is None:
        return summary
    counts = [labels.train_freq.get(code, 0) for code in coder.codes]
    bins = {"0 (catalog only)": sum(c == 0 for c in counts)} if any(c == 0 for c in counts) else {}
    for low, high in DEFAULT_FREQUENCY_BINS:
        bins[frequency_bin_name(low, high)] = sum(low <= c and (high is None or c <= high) for c in counts)
    top = sorted(coder.codes, key=lambda code: -labels.train_freq.get(code, 0))[:10]
    summary.update(
        system=labels.system,
        level=labels.level,
        truncate=labels.truncate,
        min_freq=labels.min_freq,
        top_k=labels.top_k,
        n_train_notes=labels.report.get("n_docs"),
        codes_by_train_notes=bins,
        most_frequent=[
            {"code": c, "description": coder.description(c), "train_notes": labels.train_freq.get(c, 0)} for c in top
        ],
    )
    return summary


def _local_name() -> str:
    """Who runs the service: the coder of every request when no tokens are used."""
    try:
        return getpass.getuser() or "local"
    except (KeyError, OSError):  # a container user with no name
        return "local"
