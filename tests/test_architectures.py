"""Word-level coders (TextCNN, CAML, DR-CAML, MultiResCNN, BiGRU), their heads and attention evidence.

Every model is tiny (vocabulary 24, 4 labels, a dozen positions) so the whole
file trains six models in a few seconds. The synthetic task: label ``j`` is on
iff token id ``j + 2`` occurs anywhere in the note; a model that learns it must
find one token wherever it is, which is what label attention is for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medcoder.models.networks.cnn import CAML, DRCAML, MultiResCNN, TextCNN, WordEmbedding
from medcoder.models.networks.heads import (
    LabelAttention,
    PooledLinear,
    masked_max_pool,
    masked_softmax,
    top_evidence,
)
from medcoder.models.networks.rnn import BiGRU

VOCAB, LABELS, EMBED = 24, 4, 16
DESC_LEN = 5


def _descriptions() -> torch.Tensor:
    """``[LABELS, DESC_LEN]`` description ids, padded with 0, different lengths."""
    generator = torch.Generator().manual_seed(7)
    ids = torch.randint(2, VOCAB, (LABELS, DESC_LEN), generator=generator)
    lengths = torch.tensor([5, 3, 1, 4])
    return ids * (torch.arange(DESC_LEN) < lengths[:, None])


BUILDERS: dict[str, Callable[[], nn.Module]] = {
    "textcnn": lambda: TextCNN(VOCAB, EMBED, LABELS, kernel_sizes=(2, 3), num_filters=8, dropout=0.1),
    "caml": lambda: CAML(VOCAB, EMBED, LABELS, kernel_size=4, num_filters=12, dropout=0.1),
    "drcaml": lambda: DRCAML(
        VOCAB, EMBED, LABELS, description_ids=_descriptions(), lambda_=0.1, kernel_size=3, num_filters=12, dropout=0.1
    ),
    "multirescnn": lambda: MultiResCNN(VOCAB, EMBED, LABELS, kernel_sizes=(1, 3), num_filters=6, dropout=0.1),
    "bigru_pooled": lambda: BiGRU(VOCAB, EMBED, LABELS, hidden_size=12, dropout=0.1, output="pooled"),
    "bigru_attention": lambda: BiGRU(VOCAB, EMBED, LABELS, hidden_size=12, dropout=0.1, output="label_attention"),
}
WITH_ATTENTION = {"caml", "drcaml", "multirescnn", "bigru_attention"}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # On tensors this small, intra-op threads on 2 shared cores cost more than they save (measured ~4x slower).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return BUILDERS[name]()


def padded_batch(lengths: list[int], time: int, *, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``(input_ids, mask)`` ``[len(lengths), time]`` with real ids in 1..VOCAB-1."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.arange(time)[None, :] < torch.tensor(lengths)[:, None]
    ids = torch.randint(1, VOCAB, (len(lengths), time), generator=generator)
    return ids * mask, mask


def trigger_task(n_docs: int = 64, time: int = 14) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, mask, labels ``[n_docs, LABELS]``): label j on iff token j+2 is present; filler ids avoid triggers."""
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(6, time + 1, (n_docs,), generator=generator)
    ids = torch.randint(2 + LABELS, VOCAB, (n_docs, time), generator=generator)
    for doc in range(n_docs):
        for label in range(LABELS):
            if torch.rand(1, generator=generator) < 0.4:
                ids[doc, torch.randint(0, int(lengths[doc]), (1,), generator=generator)] = label + 2
    mask = torch.arange(time)[None, :] < lengths[:, None]
    ids = ids * mask
    labels = torch.stack([(ids == label + 2).any(dim=1) for label in range(LABELS)], dim=1).float()
    return ids, mask, labels


def train(model: nn.Module, steps: int = 30, lr: float = 0.02) -> tuple[float, float]:
    """Full-batch Adam on the trigger task; (first loss, last loss)."""
    ids, mask, labels = trigger_task()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        loss = F.binary_cross_entropy_with_logits(model(ids, mask).logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses[0], losses[-1]


def model_dim(model: torch.nn.Module) -> int:
    """The input width of a model's label-attention head (0 without one)."""
    from medcoder.models.networks.heads import LabelAttention

    heads = [m for m in model.modules() if isinstance(m, LabelAttention)]
    return int(heads[0].attention_weight.shape[1]) if heads else 0


@pytest.mark.parametrize("name", BUILDERS)
def test_output_shapes_and_attention_rows(name: str) -> None:
    model = build(name).eval()
    ids, mask = padded_batch([10, 7, 4], 10)
    with torch.no_grad():
        out = model(ids, mask)
    assert out.logits.shape == (3, LABELS)
    # label attention over fewer positions than dimensions builds no label vectors (LabelAttention)
    assert out.features is None if name in WITH_ATTENTION and model_dim(model) > 10 else out.features.shape[0] == 3
    if name not in WITH_ATTENTION:
        assert out.attention is None
        return
    assert out.attention is not None and out.attention.shape == (3, LABELS, 10)
    sums = (out.attention * mask[:, None, :]).sum(dim=-1)
    torch.testing.assert_close(sums, torch.ones(3, LABELS))
    assert torch.all(out.attention[~mask[:, None, :].expand_as(out.attention)] == 0.0)


@pytest.mark.parametrize("name", BUILDERS)
def test_empty_document_gives_finite_logits_and_no_attention(name: str) -> None:
    model = build(name).eval()
    ids, mask = padded_batch([6, 0], 6)
    with torch.no_grad():
        out = model(ids, mask)
    assert torch.isfinite(out.logits).all()
    if name in WITH_ATTENTION:
        assert torch.all(out.attention[1] == 0.0)


@pytest.mark.parametrize("name", BUILDERS)
def test_padding_does_not_change_outputs(name: str) -> None:
    model = build(name).eval()
    ids, mask = padded_batch([10, 7, 4], 10)
    long_ids, long_mask = padded_batch([10, 7, 4], 17)
    long_ids[:, :10] = ids
    # Non-zero ids under the mask: outputs must depend on the mask, not on padding being id 0.
    long_ids[~long_mask] = 5
    with torch.no_grad():
        short, long = model(ids, mask), model(long_ids, long_mask)
    torch.testing.assert_close(long.logits, short.logits, rtol=1e-5, atol=1e-5)
    if name in WITH_ATTENTION:
        torch.testing.assert_close(long.attention[:, :, :10], short.attention, rtol=1e-5, atol=1e-6)
        assert torch.all(long.attention[:, :, 10:] == 0.0)


@pytest.mark.parametrize("name", BUILDERS)
def test_bf16_autocast_gives_finite_outputs(name: str) -> None:
    model = build(name)
    ids, mask = padded_batch([12, 5, 1], 12)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(ids, mask)
        loss = F.binary_cross_entropy_with_logits(out.logits.float(), torch.ones_like(out.logits.float()))
    loss.backward()
    assert torch.isfinite(out.logits).all()
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    if name in WITH_ATTENTION:
        assert torch.isfinite(out.attention).all()
        assert torch.all(out.attention[~mask[:, None, :].expand_as(out.attention)] == 0.0)
        torch.testing.assert_close(out.attention.float().sum(-1), torch.ones(3, LABELS), atol=2e-2, rtol=0)
    if name == "drcaml":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.isfinite(model.regularizer(torch.ones(3, LABELS)))


@pytest.mark.parametrize("name", BUILDERS)
def test_learns_trigger_token_pattern(name: str) -> None:
    first, last = train(build(name))
    assert last < 0.4 * first, f"{name}: loss {first:.3f} -> {last:.3f}"


@pytest.mark.parametrize("kernel_size", [1, 3])
def test_caml_attention_peaks_on_trigger_token(kernel_size: int) -> None:
    torch.manual_seed(0)
    model = CAML(VOCAB, EMBED, LABELS, kernel_size=kernel_size, num_filters=16, dropout=0.0)
    train(model, steps=40)
    ids, mask, labels = trigger_task()
    with torch.no_grad():
        attention = model.eval()(ids, mask).attention
    checked = 0
    for doc, label in labels.nonzero().tolist():
        positions = (ids[doc] == label + 2).nonzero().flatten()
        if len(positions) != 1:
            continue
        # A conv position sees kernel_size // 2 tokens either side, so any of them may carry the trigger.
        peak = int(attention[doc, label].argmax())
        assert abs(peak - int(positions[0])) <= kernel_size // 2, (doc, label, peak, int(positions[0]))
        checked += 1
    assert checked >= 50


def test_drcaml_regularizer_zero_without_positive_labels() -> None:
    model = build("drcaml")
    reg = model.regularizer(torch.zeros(5, LABELS))
    assert reg.shape == () and reg.item() == 0.0


def test_drcaml_regularizer_matches_formula_and_shrinks_towards_descriptions() -> None:
    model = build("drcaml").eval()
    labels = torch.tensor([[1.0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])  # pairs: (0,0), (0,2), (1,0)
    with torch.no_grad():
        z = model.description_vectors()
        beta = model.head.output_weight.clone()
        distance = ((beta - z) ** 2).sum(-1)
        expected = 0.1 * (2 * distance[0] + distance[2]) / 3
        torch.testing.assert_close(model.regularizer(labels), expected)

    reg = model.regularizer(labels)
    reg.backward()
    assert model.head.output_weight.grad[1].abs().sum() == 0  # label 1 has no positive document
    assert model.description_conv.weight.grad.abs().sum() > 0

    values = []
    with torch.no_grad():
        for step in (0.5, 1.0):
            model.head.output_weight.copy_(beta + step * (z - beta))
            values.append(model.regularizer(labels).item())
    assert values[0] < reg.item() and values[0] == pytest.approx(reg.item() / 4, rel=1e-4)
    assert values[1] == pytest.approx(0.0, abs=1e-10)


def test_drcaml_descriptions_are_validated_and_not_saved() -> None:
    model = build("drcaml")
    assert "description_ids" not in model.state_dict()
    with pytest.raises(ValueError, match="description_ids"):
        DRCAML(VOCAB, EMBED, LABELS, description_ids=torch.ones(LABELS + 1, 3, dtype=torch.long))


def test_textcnn_and_caml_parameter_counts() -> None:
    vocab, embed, filters, labels = 30, 6, 5, 7
    textcnn = TextCNN(vocab, embed, labels, kernel_sizes=(3, 4, 5), num_filters=filters)
    expected_cnn = vocab * embed + sum(k * embed * filters + filters for k in (3, 4, 5)) + 3 * filters * labels + labels
    assert sum(p.numel() for p in textcnn.parameters()) == expected_cnn == 667
    caml = CAML(vocab, embed, labels, kernel_size=10, num_filters=filters)
    expected_caml = vocab * embed + 10 * embed * filters + filters + 2 * labels * filters + labels
    assert sum(p.numel() for p in caml.parameters()) == expected_caml == 562
    assert isinstance(textcnn.convs, nn.ModuleList) and len(textcnn.convs) == 3
    assert textcnn.embedding.embedding.weight.shape == (vocab, embed)
    assert textcnn.output.linear.weight.shape == (labels, 3 * filters)


def test_word_embedding_pretrained_and_frozen() -> None:
    vectors = np.arange(12, dtype=np.float64).reshape(4, 3)
    embedding = WordEmbedding(4, 3, pretrained=vectors, freeze=True)
    weight = embedding.embedding.weight
    assert not weight.requires_grad and weight.dtype == torch.float32
    torch.testing.assert_close(weight[1:], torch.tensor(vectors[1:], dtype=torch.float32))
    assert torch.all(weight[0] == 0)  # padding row stays inert
    out = embedding(torch.tensor([[2, 1, 0]]), torch.tensor([[True, True, False]]))
    torch.testing.assert_close(out[0], torch.tensor([[6.0, 7, 8], [3, 4, 5], [0, 0, 0]]))
    with pytest.raises(ValueError, match=r"expected \(5, 3\)"):
        WordEmbedding(5, 3, pretrained=vectors)


def test_masked_pooling_and_softmax_ignore_padding() -> None:
    x = torch.tensor([[[-3.0], [-1.0], [0.0]], [[-2.0], [9.0], [9.0]]])  # [2, 3, 1]
    mask = torch.tensor([[True, True, False], [True, False, False]])
    # The padding 0.0 / 9.0 would win an unmasked max against the negative real values.
    torch.testing.assert_close(masked_max_pool(x, mask), torch.tensor([[-1.0], [-2.0]]))
    torch.testing.assert_close(masked_max_pool(x.bfloat16(), mask).float(), torch.tensor([[-1.0], [-2.0]]))
    empty = torch.zeros(1, 3, dtype=torch.bool)
    torch.testing.assert_close(masked_max_pool(x[:1], empty), torch.zeros(1, 1))
    scores = torch.tensor([[1.0, 1.0, 50.0], [0.0, 0.0, 0.0]]).bfloat16()
    weights = masked_softmax(scores, torch.tensor([[True, True, False], [False, False, False]]))
    assert weights.dtype == torch.bfloat16
    torch.testing.assert_close(weights.float(), torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 0.0]]))


def test_label_attention_matches_explicit_per_label_computation() -> None:
    torch.manual_seed(3)
    head = LabelAttention(3, 3)  # 4 positions >= 3 dimensions: the label vectors path
    hidden = torch.randn(2, 4, 3)
    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    logits, attention, vectors = head(hidden, mask)
    assert logits.shape == (2, 3) and attention.shape == (2, 3, 4) and vectors.shape == (2, 3, 3)
    for doc in range(2):
        n = int(mask[doc].sum())
        for label in range(3):
            alpha = torch.softmax(hidden[doc, :n] @ head.attention_weight[label], dim=0)
            v = alpha @ hidden[doc, :n]
            logit = v @ head.output_weight[label] + head.output_bias[label]
            torch.testing.assert_close(attention[doc, label, :n], alpha)
            torch.testing.assert_close(logits[doc, label], logit)
    pooled = PooledLinear(3, 3, dropout=0.0)
    assert pooled(torch.randn(2, 3)).shape == (2, 3)


def test_bigru_rejects_left_padded_input() -> None:
    model = build("bigru_pooled")
    ids = torch.tensor([[0, 3, 4]])
    with pytest.raises(ValueError, match="right-padded"):
        model(ids, ids != 0)


def test_bigru_rejects_unknown_output() -> None:
    with pytest.raises(ValueError, match="output must be one of"):
        BiGRU(VOCAB, EMBED, LABELS, output="attention")  # type: ignore[arg-type]


OFFSETS = [(5 * i, 5 * i + 4) for i in range(12)]  # token i spans characters [5i, 5i + 4)


def _no_overlaps(spans: list[tuple[int, int, float]]) -> bool:
    ordered = sorted(spans)
    return all(a[1] <= b[0] for a, b in zip(ordered, ordered[1:], strict=False))


def test_top_evidence_returns_strongest_non_overlapping_windows() -> None:
    attention = torch.zeros(3, 14)  # 14 positions, only 12 tokens: the last two are padding
    attention[0, :12] = torch.tensor([0, 0.05, 0.1, 0, 0, 0, 0.3, 0.25, 0, 0, 0.2, 0.1])
    # Label 1: two adjacent peaks; the second window is trimmed rather than dropped; then only zeros remain.
    attention[1, :12] = torch.tensor([0, 0, 0, 0.4, 0, 0.35, 0, 0, 0, 0, 0, 0])
    # Label 2: the single highest position (at the edge) loses to a broader cluster; padding is never read.
    attention[2] = torch.tensor([0.3, 0, 0, 0, 0, 0.2, 0.25, 0.2, 0, 0, 0, 0, 0.9, 0.9])
    evidence = top_evidence(attention, OFFSETS, [0, 1, 2], window=3, top=3)

    def rounded(label: int) -> list[tuple[int, int, float]]:
        return [(start, end, round(weight, 6)) for start, end, weight in evidence[label]]

    assert rounded(0) == [(25, 39, 0.55), (45, 59, 0.3), (5, 19, 0.15)]
    assert rounded(1) == [(10, 24, 0.4), (25, 34, 0.35)]
    assert rounded(2) == [(25, 39, 0.65), (0, 9, 0.3)]
    assert all(_no_overlaps(spans) for spans in evidence.values())


def test_top_evidence_window_and_top_limits() -> None:
    row = torch.tensor([[0.1, 0.2, 0.05, 0.3, 0.15, 0.2]])
    offsets = OFFSETS[:6]
    assert top_evidence(row, offsets, [0], window=1, top=2) == {
        0: [(15, 19, pytest.approx(0.3)), (5, 9, pytest.approx(0.2))]
    }
    # window 4 around position 3: one before, two after -> tokens 2..5
    assert top_evidence(row, offsets, [0], window=4, top=1)[0] == [(10, 29, pytest.approx(0.7))]
    spans = top_evidence(row, offsets, [0], window=2, top=10)[0]
    assert _no_overlaps(spans) and sum(weight for _, _, weight in spans) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="out of range"):
        top_evidence(row, offsets, [1])
    with pytest.raises(ValueError, match="window"):
        top_evidence(row, offsets, [0], window=0)


def test_label_attention_short_inputs_take_the_path_without_label_vectors_and_agree() -> None:
    import torch

    from medcoder.models.networks.heads import LabelAttention

    torch.manual_seed(0)
    head = LabelAttention(16, 50)
    torch.nn.init.normal_(head.output_bias)
    for time in (5, 40):  # shorter than in_dim: no label vectors; longer: the label vectors path
        hidden = torch.randn(3, time, 16)
        mask = torch.rand(3, time) > 0.3
        mask[:, 0] = True
        logits, attention, vectors = head(hidden, mask)
        expected = (torch.bmm(attention, hidden) * head.output_weight).sum(-1) + head.output_bias
        torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
        assert (vectors is None) == (time < 16)
