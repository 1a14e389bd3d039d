"""The shared training loop on a tiny bag-of-embeddings multilabel model (``loop_worker.TinyTask``).

Every test trains for real (200 examples, a few epochs, milliseconds per epoch)
and checks numbers: falling loss, rising dev F1, the LR formula, equal weights
with and without gradient accumulation, and bit-identical weights after a
resume, in-process and after ``kill -9``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import loop_worker
import pytest
import torch
from loop_worker import (
    BagClassifier,
    ShufflePlan,
    TinyTask,
    bce_loss,
    build_model,
    micro_f1,
    worker_config,
)
from safetensors.torch import load_file

from medcoder.config import TrainConfig
from medcoder.engine.checkpoint import cpu_copy, find_checkpoint
from medcoder.engine.loop import LoopResult, lr_factor, train_loop
from medcoder.errors import MedcoderError

WORKER = Path(__file__).with_name("loop_worker.py")
TIMINGS = ("seconds", "eval_seconds", "docs_per_s")
TRAIN, DEV = TinyTask(200, seed=0), TinyTask(100, seed=1)


def config(**changes: Any) -> TrainConfig:
    base = {"epochs": 3, "batch_size": 16, "lr": 0.05, "precision": "fp32", "early_stopping_metric": "micro_f1"}
    return TrainConfig(**{**base, **changes})


def dev_f1(model: torch.nn.Module) -> dict[str, float]:
    return {"micro_f1": micro_f1(model, DEV)}


def train(model: BagClassifier, cfg: TrainConfig, **kwargs: Any) -> LoopResult:
    plan = ShufflePlan(len(TRAIN), cfg.batch_size, seed=0)
    return train_loop(model, plan, TRAIN.make_batch, bce_loss, cfg, **kwargs)


def without_timings(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in entry.items() if k not in TIMINGS} for entry in history]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_loss_falls_and_dev_f1_rises() -> None:
    model = build_model()
    result = train(model, config(epochs=8), evaluate=dev_f1)
    losses = [h["train_loss"] for h in result.history]
    f1s = [h["dev_micro_f1"] for h in result.history]
    assert result.epochs_run == 8 and not result.stopped_early and result.resumed_from is None
    assert losses[-1] < 0.5 * losses[0]
    assert f1s[0] < 0.6 and f1s[-1] > 0.9
    assert result.best_epoch == 8 and result.best_score == f1s[-1]
    assert micro_f1(model, DEV) == result.best_score  # the model holds the best weights
    assert all(h["docs_per_s"] > 0 and h["seconds"] > 0 for h in result.history)


@pytest.mark.parametrize(
    ("metric", "scores", "best_epoch"),
    [
        ("micro_f1", [0.1, 0.5, 0.4, 0.45, 0.9, 0.9], 2),  # higher is better; 0.9 comes too late
        ("loss", [1.0, 0.8, 0.9, 0.85, 0.1, 0.1], 2),  # lower is better
    ],
)
def test_early_stopping_restores_the_best_epoch(metric: str, scores: list[float], best_epoch: int) -> None:
    snapshots: list[dict[str, torch.Tensor]] = []

    def scripted(model: torch.nn.Module) -> dict[str, float]:
        assert not model.training and not torch.is_grad_enabled()
        snapshots.append(cpu_copy(model.state_dict()))
        return {metric: scores[len(snapshots) - 1]}

    model = build_model()
    result = train(model, config(epochs=6, early_stopping_metric=metric, early_stopping_patience=2), evaluate=scripted)
    assert result.stopped_early and result.epochs_run == 4  # epochs 3 and 4 did not improve on epoch 2
    assert result.best_epoch == best_epoch and result.best_score == scores[1]
    assert [h[f"dev_{metric}"] for h in result.history] == scores[:4]
    assert_same_weights(model.state_dict(), snapshots[best_epoch - 1])
    assert not torch.equal(model.out.weight, snapshots[-1]["out.weight"])
    assert model.training  # left in the mode it came in


def test_missing_early_stopping_metric_is_named() -> None:
    with pytest.raises(MedcoderError, match="'map' is not among the dev metrics \\(micro_f1\\)"):
        train(build_model(), config(epochs=1, early_stopping_metric="map"), evaluate=dev_f1)


def test_grad_accumulation_matches_the_bigger_batch() -> None:
    # 200 examples: 12 batches of 16 + one of 8 vs. 12 pairs of 8 + a trailing single 8 (still a step).
    common = {"epochs": 2, "max_grad_norm": 1.0, "weight_decay": 0.01, "warmup_ratio": 0.2}
    big, accumulated = build_model(), build_model()
    result_big = train(big, config(batch_size=16, grad_accum=1, **common))
    result_acc = train(accumulated, config(batch_size=8, grad_accum=2, **common))
    for name, tensor in big.state_dict().items():
        torch.testing.assert_close(accumulated.state_dict()[name], tensor, rtol=1e-5, atol=1e-6)
    assert not torch.equal(big.out.weight, build_model().out.weight)
    for a, b in zip(result_big.history, result_acc.history, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["lr"] == pytest.approx(b["lr"])


def test_warmup_then_linear_decay_follows_the_formula() -> None:
    # 4 batches of 50 per epoch, 5 epochs: 20 optimizer steps, ceil(0.2 * 20) = 4 of warmup.
    base = 0.02
    result = train(build_model(), config(epochs=5, batch_size=50, lr=base, warmup_ratio=0.2, schedule="linear"))
    total, warmup = 20, 4
    last_steps = [3, 7, 11, 15, 19]  # the last step of each epoch
    assert [h["lr"] for h in result.history] == pytest.approx(
        [base * lr_factor(s, total, warmup, "linear") for s in last_steps]
    )
    assert result.history[0]["lr"] == pytest.approx(base)  # the last warmup step uses the full LR
    assert result.history[-1]["lr"] == pytest.approx(base * (total - 19) / (total - warmup))  # base / 16
    assert [lr_factor(s, total, warmup, "linear") for s in (0, 1, 4, 12)] == pytest.approx([0.25, 0.5, 1.0, 0.5])
    assert lr_factor(12, total, warmup, "cosine") == pytest.approx(0.5)
    assert lr_factor(19, total, warmup, "constant") == 1.0


def test_explicit_param_groups_are_used() -> None:
    model = build_model()
    embed_before = model.embed.weight.detach().clone()
    groups = [{"params": [model.embed.weight], "lr": 0.0}, {"params": list(model.out.parameters())}]
    result = train(model, config(epochs=2, weight_decay=0.1), param_groups=groups)
    assert torch.equal(model.embed.weight, embed_before)  # lr 0: not even decoupled weight decay moves it
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert groups[0]["lr"] == 0.0 and "weight_decay" not in groups[1]  # the caller's dicts are not changed


def test_bf16_autocast_trains_and_keeps_float32_weights() -> None:
    dtypes: set[torch.dtype] = set()

    def loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        dtypes.add(model(batch["tokens"]).dtype)
        return bce_loss(model, batch)

    model = build_model()
    plan = ShufflePlan(len(TRAIN), 16)
    result = train_loop(model, plan, TRAIN.make_batch, loss, config(epochs=6, precision="bf16"), evaluate=dev_f1)
    assert dtypes == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert result.history[-1]["train_loss"] < 0.5 * result.history[0]["train_loss"]
    assert result.best_score > 0.85


def test_fp16_on_cpu_is_a_clear_error() -> None:
    with pytest.raises(MedcoderError, match="fp16 needs a CUDA device"):
        train(build_model(), config(precision="fp16"))


class Interrupted(Exception):
    pass


def interrupt_once_at(step: int, total_steps: int) -> Callable[[int, int], None]:
    """A progress callback that checks the total and raises ``Interrupted`` the first time ``step`` is done."""
    fired = []

    def progress(done: int, total: int) -> None:
        assert total == total_steps
        if done == step and not fired:
            fired.append(done)
            raise Interrupted

    return progress


@pytest.mark.parametrize(("stop_after", "resumed_from"), [(7, 6), (15, 15)])
def test_resume_after_interruption_is_exact(tmp_path: Path, stop_after: int, resumed_from: int) -> None:
    cfg = config(checkpoint_every_steps=3, weight_decay=0.01, warmup_ratio=0.1)
    straight = build_model(dropout=0.3)
    expected = train(straight, cfg, evaluate=dev_f1, seed=5)

    progress = interrupt_once_at(stop_after, total_steps=39)  # 3 epochs of ceil(200 / 16) steps
    with pytest.raises(Interrupted):
        train(build_model(dropout=0.3), cfg, evaluate=dev_f1, seed=5, checkpoint_dir=tmp_path, progress=progress)
    resumed = build_model(dropout=0.3)
    result = train(resumed, cfg, evaluate=dev_f1, seed=5, checkpoint_dir=tmp_path, progress=progress)

    assert result.resumed_from == resumed_from
    assert_same_weights(resumed.state_dict(), straight.state_dict())
    assert without_timings(result.history) == without_timings(expected.history)
    assert (result.best_epoch, result.best_score) == (expected.best_epoch, expected.best_score)

    # A finished run resumes to its end at once: same weights, same result.
    again = build_model(dropout=0.3)
    final = train(again, cfg, evaluate=dev_f1, seed=5, checkpoint_dir=tmp_path)
    assert final.resumed_from == 39 and without_timings(final.history) == without_timings(expected.history)
    assert_same_weights(again.state_dict(), straight.state_dict())


def test_dropout_makes_the_weights_depend_on_the_rng() -> None:
    # Guards the test above: with dropout, a different RNG stream gives different weights.
    cfg = config(epochs=1)
    a, b = build_model(dropout=0.3), build_model(dropout=0.3)
    train(a, cfg, seed=5)
    train(b, cfg, seed=6)
    assert not torch.equal(a.out.weight, b.out.weight)


def test_checkpoint_holds_only_safetensors_and_json(tmp_path: Path) -> None:
    model = build_model(dropout=0.3)
    train(model, config(epochs=1, checkpoint_every_steps=4), evaluate=dev_f1, checkpoint_dir=tmp_path)
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    assert files == [
        "last",
        "last/best.safetensors",
        "last/model.safetensors",
        "last/optimizer.safetensors",
        "last/rng.safetensors",
        "last/state.json",
    ]
    for path in (tmp_path / "last").iterdir():
        assert not path.read_bytes().startswith(b"\x80")  # pickle protocol 2+ magic
    state = json.loads((tmp_path / "last" / "state.json").read_text(encoding="utf-8"))
    assert state["loop"]["global_step"] == 13 and state["loop"]["epoch"] == 1
    optimizer = load_file(str(tmp_path / "last" / "optimizer.safetensors"))
    assert set(optimizer) == {f"state.{i}.{n}" for i in range(3) for n in ("step", "exp_avg", "exp_avg_sq")}
    assert_same_weights(load_file(str(tmp_path / "last" / "model.safetensors")), model.state_dict())


def test_a_crash_between_the_two_renames_is_recovered(tmp_path: Path) -> None:
    cfg = config(epochs=2, checkpoint_every_steps=5)
    straight = build_model()
    train(straight, cfg)
    with pytest.raises(Interrupted):
        train(build_model(), cfg, checkpoint_dir=tmp_path, progress=interrupt_once_at(8, total_steps=26))
    # What atomic_directory leaves when killed mid-swap: the old folder moved aside, the new one not yet in.
    (tmp_path / "last").rename(tmp_path / ".last.x1.old")
    (tmp_path / ".last.x2.tmp").mkdir()
    model = build_model()
    result = train(model, cfg, checkpoint_dir=tmp_path)
    assert result.resumed_from == 5
    assert_same_weights(model.state_dict(), straight.state_dict())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


@pytest.mark.parametrize(
    ("change", "named"),
    [({"lr": 0.01}, "config.lr"), ({"epochs": 4}, "config.epochs"), ({"seed": 1}, "seed")],
)
def test_a_checkpoint_of_another_run_is_refused(tmp_path: Path, change: dict[str, Any], named: str) -> None:
    with pytest.raises(Interrupted):
        train(build_model(), config(), checkpoint_dir=tmp_path, progress=interrupt_once_at(14, total_steps=39))
    seed = change.pop("seed", 0)
    with pytest.raises(MedcoderError, match=f"checkpoint belongs to another run \\({named} differ") as error:
        train(build_model(), config(**change), checkpoint_dir=tmp_path, seed=seed)
    assert str(tmp_path / "last") in str(error.value)
    # Settings that do not change the computation may change on resume.
    result = train(build_model(), config(checkpoint_every_steps=7, num_threads=1), checkpoint_dir=tmp_path)
    assert result.resumed_from == 13


def read_global_step(checkpoint: Path) -> int:
    try:
        return json.loads((checkpoint / "state.json").read_text(encoding="utf-8"))["loop"]["global_step"]
    except (OSError, ValueError):  # not there yet, or swapped away while reading
        return 0


def start_worker(checkpoint_dir: Path, sleep: float) -> subprocess.Popen[bytes]:
    env = {**os.environ, "LOOP_WORKER_SLEEP": str(sleep), "OMP_NUM_THREADS": "1"}
    outputs = [str(checkpoint_dir.parent / f"killed.{suffix}") for suffix in ("safetensors", "json")]
    command = [sys.executable, str(WORKER), str(checkpoint_dir), *outputs]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_kill_9_then_resume_gives_identical_weights(tmp_path: Path) -> None:
    # The worker: 3 epochs x 13 steps, a checkpoint every 2 steps, 50 ms of sleep per batch (~2 s of run).
    victim = start_worker(tmp_path / "run", sleep=0.05)
    # The uninterrupted run and the resume happen here: the process that resumes never saw the killed one.
    loop_worker.main(str(tmp_path / "ref"), str(tmp_path / "reference.safetensors"), str(tmp_path / "reference.json"))
    checkpoint = tmp_path / "run" / "last"
    deadline = time.monotonic() + 120
    while read_global_step(checkpoint) < 4:
        assert victim.poll() is None, victim.communicate()[1].decode(errors="replace")
        assert time.monotonic() < deadline, "the worker wrote no checkpoint in 120 s"
        time.sleep(0.01)
    time.sleep(0.07)  # land somewhere inside a later step, not right after a checkpoint
    assert victim.poll() is None, "the worker finished before it could be killed"
    os.kill(victim.pid, signal.SIGKILL)
    victim.communicate()
    assert victim.returncode == -signal.SIGKILL
    assert find_checkpoint(tmp_path / "run") == checkpoint  # a kill mid-swap leaves it as .last.*.old
    killed_at = read_global_step(checkpoint)
    assert 4 <= killed_at < 39

    loop_worker.main(str(tmp_path / "run"), str(tmp_path / "resumed.safetensors"), str(tmp_path / "resumed.json"))
    resumed = json.loads((tmp_path / "resumed.json").read_text(encoding="utf-8"))
    reference = json.loads((tmp_path / "reference.json").read_text(encoding="utf-8"))
    assert resumed["resumed_from"] == killed_at and reference["resumed_from"] is None
    weights, reference_weights = tmp_path / "resumed.safetensors", tmp_path / "reference.safetensors"
    assert_same_weights(load_file(str(weights)), load_file(str(reference_weights)))
    assert weights.read_bytes() == reference_weights.read_bytes()
    assert without_timings(resumed["history"]) == without_timings(reference["history"])
    assert len(resumed["history"]) == worker_config().epochs == 3
