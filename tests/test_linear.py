"""TF-IDF + LR: learns a known keyword -> label pattern, survives save/load exactly."""

from __future__ import annotations

import numpy as np
import pytest

from medcoder.errors import BundleError, MedcoderError
from medcoder.models import build_model, load_model
from medcoder.models.tfidf_lr import TfidfLogisticRegression, TfidfLrConfig

KEYWORDS = ["hypertension", "diabetes", "asthma", "pneumonia", "anemia"]
FILLER = "patient seen in clinic today vitals stable plan follow up".split()


def keyword_corpus(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Notes that mention a random subset of KEYWORDS among filler words; y[i, j] = keyword j present."""
    rng = np.random.default_rng(seed)
    y = rng.random((n, len(KEYWORDS))) < 0.35
    y[y.sum(axis=1) == 0, 0] = True
    texts = []
    for row in y:
        words = list(rng.choice(FILLER, size=12)) + [k for k, on in zip(KEYWORDS, row, strict=True) if on]
        rng.shuffle(words)
        texts.append(" ".join(words))
    return texts, y


def test_learns_keyword_pattern_one_vs_rest() -> None:
    texts, y = keyword_corpus(120, seed=0)
    test_texts, y_test = keyword_corpus(40, seed=1)
    config = TfidfLrConfig(min_df=1, ngram_range=(1, 1), C=10, n_jobs=1)
    model = build_model(config, n_labels=len(KEYWORDS), task="multilabel").fit(texts, y)
    scores = model.predict_scores(test_texts)
    assert scores.shape == (40, len(KEYWORDS)) and scores.dtype == np.float32
    # every positive outranks every negative for each label: the pattern is learned exactly
    for j in range(len(KEYWORDS)):
        assert scores[y_test[:, j], j].min() > scores[~y_test[:, j], j].max()


def test_parallel_fit_equals_serial_fit() -> None:
    """Enough labels to use worker processes, and features large enough (> 1 MB) that
    joblib memory-maps them read-only in the workers (that once broke liblinear)."""
    rng = np.random.default_rng(2)
    vocabulary = np.array([f"w{i}" for i in range(4000)])
    words = rng.choice(vocabulary, size=(300, 250))
    texts = [" ".join(row) for row in words]
    y = np.stack([(words == f"w{j}").any(axis=1) for j in range(210)], axis=1)
    config = TfidfLrConfig(min_df=1, ngram_range=(1, 2), C=1.0)
    serial = build_model(config.model_copy(update={"n_jobs": 1}), n_labels=210, task="multilabel").fit(texts, y)
    parallel = build_model(config.model_copy(update={"n_jobs": 2}), n_labels=210, task="multilabel").fit(texts, y)
    x = parallel._features(texts, None)
    assert x.data.nbytes + x.indices.nbytes > 1_000_000
    np.testing.assert_array_equal(serial.coef_, parallel.coef_)
    np.testing.assert_array_equal(serial.intercept_, parallel.intercept_)


def test_progress_reports_every_label() -> None:
    texts, y = keyword_corpus(60, seed=3)
    calls: list[tuple[int, int]] = []
    build_model(TfidfLrConfig(min_df=1, n_jobs=1), n_labels=5, task="multilabel").fit(
        texts, y, progress=lambda done, total: calls.append((done, total))
    )
    assert calls[-1] == (5, 5) and [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_constant_label_gets_pinned_probability() -> None:
    texts, y = keyword_corpus(50, seed=4)
    y = np.concatenate([y, np.ones((50, 1), dtype=bool)], axis=1)  # a label on every note
    model = build_model(TfidfLrConfig(min_df=1, n_jobs=1), n_labels=6, task="multilabel").fit(texts, y)
    assert model.predict_scores(["anything at all"])[0, 5] > 0.999


def test_save_load_gives_identical_scores(tmp_path) -> None:
    texts, y = keyword_corpus(80, seed=5)
    model = build_model(TfidfLrConfig(min_df=1, n_jobs=1), n_labels=5, task="multilabel").fit(texts, y)
    model.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors", "vocab.json"]
    again = load_model(tmp_path, model.config, n_labels=5, task="multilabel")
    probe = ["asthma and anemia noted", "diabetes follow up", "nothing relevant here"]
    np.testing.assert_array_equal(model.predict_scores(probe), again.predict_scores(probe))


def test_load_rejects_wrong_shapes_and_garbage(tmp_path) -> None:
    texts, y = keyword_corpus(60, seed=6)
    model = build_model(TfidfLrConfig(min_df=1, n_jobs=1), n_labels=5, task="multilabel").fit(texts, y)
    model.save(tmp_path)
    with pytest.raises(BundleError, match="coef"):
        TfidfLogisticRegression.load(tmp_path, model.config, n_labels=7, task="multilabel")
    (tmp_path / "model.safetensors").write_bytes(b"\x80\x04garbage-not-safetensors")
    with pytest.raises(BundleError, match="unreadable weights"):
        TfidfLogisticRegression.load(tmp_path, model.config, n_labels=5, task="multilabel")


def test_multiclass_softmax_learns_and_sums_to_one() -> None:
    rng = np.random.default_rng(7)
    classes = ["cardiology", "pulmonology", "nephrology"]
    cues = {
        "cardiology": "troponin ecg murmur",
        "pulmonology": "spirometry wheeze inhaler",
        "nephrology": "creatinine dialysis",
    }
    labels = rng.integers(0, 3, size=90)
    texts = [f"{' '.join(rng.choice(FILLER, 8))} {cues[classes[c]]}" for c in labels]
    y = np.eye(3, dtype=bool)[labels]
    model = build_model(TfidfLrConfig(min_df=1, C=10), n_labels=3, task="multiclass").fit(texts, y)
    probs = model.predict_scores(["wheeze and inhaler use", "new murmur and ecg changes", "dialysis today"])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert list(probs.argmax(axis=1)) == [1, 0, 2]


def test_multiclass_requires_one_label_per_note() -> None:
    y = np.array([[True, True], [False, True]])
    model = build_model(TfidfLrConfig(min_df=1), n_labels=2, task="multiclass")
    with pytest.raises(MedcoderError, match="exactly one label"):
        model.fit(["a note here", "another note"], y)


def test_pair_features_learn_overlap() -> None:
    """Entailment iff the hypothesis names the premise's finding: needs the product block."""
    rng = np.random.default_rng(8)
    findings = ["fever", "rash", "cough", "edema", "jaundice", "syncope"]
    premises, hypotheses, target = [], [], []
    for _ in range(160):
        finding = rng.choice(findings)
        same = rng.random() < 0.5
        other = rng.choice([f for f in findings if f != finding])
        premises.append(f"the patient presented with {finding} yesterday")
        hypotheses.append(f"patient has {finding if same else other}")
        target.append(0 if same else 1)
    y = np.eye(2, dtype=bool)[target]
    model = build_model(TfidfLrConfig(min_df=1, C=100), n_labels=2, task="pair")
    model.fit(premises[:120], y[:120], pairs=hypotheses[:120])
    predicted = model.predict_scores(premises[120:], pairs=hypotheses[120:]).argmax(axis=1)
    assert (predicted == np.array(target[120:])).mean() >= 0.9
    with pytest.raises(MedcoderError, match="second text"):
        model.predict_scores(premises[:2])


@pytest.mark.parametrize(("ngram_range", "lowercase"), [((1, 1), True), ((1, 2), True), ((2, 3), False)])
def test_ngram_counts_equal_scikit_learns(ngram_range, lowercase) -> None:
    """Prediction counts n-grams without scikit-learn (2 s to import); the counts must be scikit-learn's own."""
    from sklearn.feature_extraction.text import CountVectorizer

    from medcoder.data.sources.synthetic import SyntheticSource
    from medcoder.models.tfidf_lr import NgramCounter

    texts = [n.text for n in SyntheticSource(n_notes=40, seed=3).read()]
    texts += ["Ünïcode café: naïve CHF, HTN; T2DM 5mg b.i.d.", "a", ""]  # accents, short tokens, nothing at all
    vectorizer = CountVectorizer(ngram_range=ngram_range, lowercase=lowercase, min_df=1).fit(texts[:30])
    terms = [str(t) for t in vectorizer.get_feature_names_out()]
    ours = NgramCounter(terms, ngram_range=ngram_range, lowercase=lowercase).transform(texts)
    theirs = vectorizer.transform(texts)
    assert ours.shape == theirs.shape and (ours != theirs).nnz == 0
    assert ours.has_sorted_indices


# --- LIBLINEAR losses, pruning, the label tree ----------------------------------------------


def topic_corpus(n: int, seed: int, n_labels: int = 60) -> tuple[list[str], np.ndarray]:
    """Notes with 1-3 labels; label j is said by its own word `code{j}` (plus its group's word) among filler."""
    rng = np.random.default_rng(seed)
    y = np.zeros((n, n_labels), dtype=bool)
    texts = []
    for i in range(n):
        labels = rng.choice(n_labels, size=rng.integers(1, 4), replace=False)
        y[i, labels] = True
        words = list(rng.choice(FILLER, size=10)) + [f"code{j} group{j // 10}" for j in labels]
        rng.shuffle(words)
        texts.append(" ".join(words))
    return texts, y


def _map(y: np.ndarray, scores: np.ndarray) -> float:
    from medcoder.evaluation.metrics import mean_average_precision

    return float(mean_average_precision(y, scores))


@pytest.mark.parametrize("loss", ["lr", "svm"])
def test_both_losses_learn_and_keep_sparse_float32_weights(loss) -> None:
    texts, y = keyword_corpus(120, seed=0)
    test_texts, y_test = keyword_corpus(40, seed=1)
    config = TfidfLrConfig(min_df=1, ngram_range=(1, 1), C=10 if loss == "lr" else 1.0, loss=loss, n_jobs=1)
    model = build_model(config, n_labels=len(KEYWORDS), task="multilabel").fit(texts, y)
    scores = model.predict_scores(test_texts)
    for j in range(len(KEYWORDS)):
        assert scores[y_test[:, j], j].min() > scores[~y_test[:, j], j].max()
    assert model.coef_t_.dtype == np.float32
    # the keyword carries its own label's largest weight
    terms = model.counter_.terms
    for j, keyword in enumerate(KEYWORDS):
        assert terms[int(np.argmax(model.coef_[j]))] == keyword


def test_liblinear_lr_matches_scikit_learn_liblinear() -> None:
    """The same solver (-s 0, bias 1, tol 1e-4) as scikit-learn's LogisticRegression(solver="liblinear")."""
    from sklearn.linear_model import LogisticRegression

    texts, y = keyword_corpus(100, seed=7)
    model = build_model(TfidfLrConfig(min_df=1, C=10, n_jobs=1, prune=0.0), n_labels=5, task="multilabel").fit(texts, y)
    x = model._features(texts, None)
    for j in range(5):
        reference = LogisticRegression(solver="liblinear", C=10, tol=1e-4).fit(x, y[:, j])
        np.testing.assert_allclose(
            model.coef_[j], reference.coef_[0], rtol=0, atol=1e-3
        )  # within the solvers' tolerance
        assert abs(model.intercept_[j] - reference.intercept_[0]) < 1e-3


def test_pruning_drops_small_weights_and_keeps_the_ranking(tmp_path) -> None:
    texts, y = topic_corpus(400, seed=1)
    test_texts, y_test = topic_corpus(150, seed=2)
    base = TfidfLrConfig(min_df=1, ngram_range=(1, 1), loss="svm", C=1.0, n_jobs=2, prune=0.0)
    full = build_model(base, n_labels=60, task="multilabel").fit(texts, y)
    pruned = build_model(base.model_copy(update={"prune": 0.1}), n_labels=60, task="multilabel").fit(texts, y)
    kept, before_pruning = np.count_nonzero(pruned.coef_), np.count_nonzero(full.coef_)
    assert kept < 0.6 * before_pruning
    assert np.all(np.abs(pruned.coef_[pruned.coef_ != 0]) >= 0.1)
    # mostly non-zero weights are kept dense (4 bytes a weight, not 8), sparse ones as CSR
    assert isinstance(full.coef_t_, np.ndarray) == (before_pruning > 0.5 * full.coef_.size)
    assert not isinstance(pruned.coef_t_, np.ndarray) and pruned.coef_t_.format == "csr"
    before, after = _map(y_test, full.predict_scores(test_texts)), _map(y_test, pruned.predict_scores(test_texts))
    assert before > 0.9 and after > before - 0.02
    pruned.save(tmp_path)
    again = load_model(tmp_path, pruned.config, n_labels=60, task="multilabel")
    np.testing.assert_array_equal(again.predict_scores(test_texts), pruned.predict_scores(test_texts))


def test_label_tree_learns_saves_and_explains(tmp_path) -> None:
    texts, y = topic_corpus(500, seed=3)
    test_texts, y_test = topic_corpus(150, seed=4)
    config = TfidfLrConfig(min_df=1, ngram_range=(1, 1), loss="svm", C=1.0, method="tree", tree_k=6, beam=4, n_jobs=2)
    calls: list[tuple[int, int]] = []
    model = build_model(config, n_labels=60, task="multilabel").fit(
        texts, y, progress=lambda d, t: calls.append((d, t))
    )
    tree = model.tree_
    assert tree is not None and sorted(tree.label[tree.label >= 0].tolist()) == list(range(60))
    assert int(tree.depth.max()) >= 3  # 60 labels, 6 children a node: clustered twice at least
    assert calls[-1][0] == calls[-1][1] == len(tree.parent) - 1
    scores = model.predict_scores(test_texts)
    assert _map(y_test, scores) > 0.9
    # off the beam a label scores 0: most labels of a note are never scored
    assert np.mean(scores == 0) > 0.5
    model.save(tmp_path)
    again = load_model(tmp_path, config, n_labels=60, task="multilabel")
    np.testing.assert_array_equal(again.predict_scores(test_texts), scores)
    label = int(np.flatnonzero(y_test[0])[0])
    spans = again.explain(test_texts[:1], [[label]])[0][label]
    assert spans and test_texts[0][spans[0][0] : spans[0][1]] in (f"code{label}", f"group{label // 10}")


def test_dense_weights_of_an_older_bundle_still_load(tmp_path) -> None:
    from safetensors.numpy import save_file

    texts, y = keyword_corpus(80, seed=5)
    model = build_model(TfidfLrConfig(min_df=1, n_jobs=1), n_labels=5, task="multilabel").fit(texts, y)
    model.save(tmp_path)
    arrays = {"coef": model.coef_, "intercept": model.intercept_, "idf": model.idf_}
    save_file(arrays, str(tmp_path / "model.safetensors"), metadata={"format": "medcoder.tfidf_lr.v1"})
    again = load_model(tmp_path, model.config, n_labels=5, task="multilabel")
    np.testing.assert_array_equal(again.predict_scores(texts), model.predict_scores(texts))


def test_damaged_sparse_weights_are_refused(tmp_path) -> None:
    from safetensors.numpy import load_file, save_file

    texts, y = topic_corpus(200, seed=6)
    config = TfidfLrConfig(min_df=1, loss="svm", C=1.0, prune=0.1, n_jobs=1)
    model = build_model(config, n_labels=60, task="multilabel").fit(texts, y)
    model.save(tmp_path)
    arrays = load_file(str(tmp_path / "model.safetensors"))
    arrays["coef_indices"][-1] = 99  # a column past the last label
    save_file(arrays, str(tmp_path / "model.safetensors"))
    with pytest.raises(BundleError, match="damaged"):
        TfidfLogisticRegression.load(tmp_path, model.config, n_labels=60, task="multilabel")


def test_dual_svm_reaches_the_primal_l2_loss_svm_optimum() -> None:
    """loss svm solves LIBLINEAR -s 1 (dual); its weights are scikit-learn's LinearSVC primal (-s 2) ones."""
    from sklearn.svm import LinearSVC

    texts, y = keyword_corpus(100, seed=8)
    config = TfidfLrConfig(min_df=1, C=1.0, loss="svm", prune=0.0, tol=1e-4, n_jobs=1)
    model = build_model(config, n_labels=5, task="multilabel").fit(texts, y)
    x = model._features(texts, None)
    for j in range(5):
        reference = LinearSVC(C=1.0, loss="squared_hinge", dual=False, tol=1e-6).fit(x, y[:, j])
        np.testing.assert_allclose(model.coef_[j], reference.coef_[0], rtol=0, atol=2e-3)
        assert abs(model.intercept_[j] - reference.intercept_[0]) < 2e-3


def test_prediction_does_not_copy_the_weights() -> None:
    """Coding a few notes allocates a small fraction of the weights' size (it once held float64 copies: ~4x)."""
    import tracemalloc

    rng = np.random.default_rng(9)
    vocabulary = np.array([f"w{i}" for i in range(6000)])
    words = rng.choice(vocabulary, size=(400, 300))
    texts = [" ".join(row) for row in words]
    y = np.stack([(words == f"w{j}").any(axis=1) for j in range(80)], axis=1)
    for prune in (0.0, 0.01):  # dense and sparse weights
        config = TfidfLrConfig(min_df=1, ngram_range=(1, 1), loss="svm", C=1.0, prune=prune, n_jobs=2)
        model = build_model(config, n_labels=80, task="multilabel").fit(texts, y)
        weights = model.coef_t_
        size = weights.nbytes if isinstance(weights, np.ndarray) else weights.data.nbytes + weights.indices.nbytes
        model.predict_scores(texts[:3])  # warm up
        tracemalloc.start()
        scores = model.predict_scores(texts[:3])
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert scores.shape == (3, 80) and size > 500_000
        assert peak < 0.2 * size, (prune, peak, size)
