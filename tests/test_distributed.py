"""DDP: two CPU processes (gloo) started by torchrun train one model: through the loop, and through `medcoder train`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from trigger_corpus import TRIGGERS, corpus

import medcoder
from medcoder.engine.distributed import World

TESTS = Path(__file__).parent


def test_world_shards_batches_evenly() -> None:
    batches = [[i] for i in range(7)]
    shards = [World(r, 3).shard(batches) for r in range(3)]
    assert shards == [[[0], [3]], [[1], [4]], [[2], [5]]]  # equal counts; the 7th batch is left out
    assert World().shard(batches) == batches
    assert [World(r, 4).shard([[0], [1]]) for r in range(4)] == [[[0]], [[1]], [[0]], [[1]]]


def test_two_cpu_processes_train_one_model_with_ddp(tmp_path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run(
        [*command, str(TESTS / "ddp_worker.py"), str(tmp_path)], env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in records] == [2, 2]
    # Each rank trained on its own half of every epoch's batches.
    for epoch in ("0", "1", "2", "3"):
        first, second = (set(r["seen"][epoch]) for r in records)
        assert not first & second and len(first) == len(second) == 96  # 13 batches of 16 -> 6 per rank
    # DDP broadcast rank 0's start and averaged the gradients: both ranks end with the same weights...
    weights = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1)]
    for name, tensor in weights[0].items():
        assert torch.equal(tensor, weights[1][name]), name
    # ...that learned the task (dev micro-F1 far above chance), and only rank 0 wrote a checkpoint.
    history = records[0]["history"]
    assert history[-1]["dev_micro_f1"] > 0.8 and history[-1]["train_loss"] < history[0]["train_loss"]
    assert (tmp_path / "checkpoints").is_dir()


# ------------------------------------------------------------------ `medcoder train` under a launcher
# The README's recipes word for word: the launcher runs the installed `medcoder` script (what
# `$(which medcoder)` names in the project's environment) in 2 CPU processes.
BIN = Path(sys.executable).parent
MEDCODER = str(BIN / "medcoder")
LAUNCHERS = {
    "torchrun": [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2"],
    "accelerate": [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2"],
}
# The trigger corpus with ICD-10-CM codes for labels: code j is on iff its word occurs, and each
# code's catalog description names that word (what DR-CAML's regulariser pulls towards).
CODES = {"fever": "R50.9", "cough": "R05.9", "rash": "R21", "edema": "R60.9", "syncope": "R55", "jaundice": "R17"}
N_TRAIN, N_DEV, N_TEST = 160, 40, 40
WORD_MODEL = {"encoding": {"max_tokens": 40}, "embedding": {"dim": 16}, "num_filters": 16, "kernel_size": 1}
CAML = {"type": "caml.v1", **WORD_MODEL, "train": {"epochs": 6, "batch_size": 8, "lr": 0.03, "num_threads": 1}}


def write_run(folder: Path, model: dict, **sections) -> Path:
    """A run config (and its notes, ``notes.jsonl``) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    texts, y = corpus(N_TRAIN + N_DEV + N_TEST, seed=5)
    splits = ["train"] * N_TRAIN + ["dev"] * N_DEV + ["test"] * N_TEST
    lines = [
        json.dumps(
            {
                "id": f"n{i}",
                "text": text,
                "labels": [CODES[w] for w, on in zip(TRIGGERS, row, strict=True) if on],
                "split": split,
            }
        )
        for i, (text, row, split) in enumerate(zip(texts, y, splits, strict=True))
    ]
    (folder / "notes.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    raw = {
        "kind": "train",
        "data": {"source": {"kind": "jsonl", "path": str(folder / "notes.jsonl")}},
        "model": model,
        "calibration": "none",
        **sections,
    }
    path = folder / "run.yaml"
    path.write_text(json.dumps(raw), encoding="utf-8")  # JSON is YAML
    return path


def launch(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HOME": str(cwd.parent / "hf"),  # no accelerate config of the user's: only the command line counts
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL
    )


def bundle_info(bundle: Path) -> dict:
    return json.loads((bundle / "config.json").read_text(encoding="utf-8"))["info"]


def test_medcoder_train_under_torchrun_and_accelerate_as_the_readme_says(tmp_path) -> None:
    for name, launcher in LAUNCHERS.items():
        run_dir = tmp_path / name
        config = write_run(run_dir, CAML)
        done = launch([*launcher, MEDCODER, "train", str(config), "-o", "model"], run_dir)
        assert done.returncode == 0, f"{name}: {done.stderr[-3000:]}"
        # Two processes joined one gloo group; only rank 0 wrote and reported: one bundle, one report.
        assert "rank 0 of 2 (gloo)" in done.stderr and "rank 1 of 2 (gloo)" in done.stderr, name
        assert done.stdout.count("model written to model") == 1 and done.stdout.count("| MAP |") == 1, name
        # Nothing else beside it: no half-written temporary sibling, no checkpoints left behind.
        assert sorted(p.name for p in run_dir.iterdir()) == ["model", "notes.jsonl", "run.yaml"], name
        info = bundle_info(run_dir / "model")
        assert info["world_size"] == 2 and info["split_sizes"]["train"] == N_TRAIN
        # The ranks split the batches: one process takes all 160 / 8 = 20 of an epoch, each rank 10.
        history = info["training"]["members"][0]["history"]
        assert [(h["batches"], h["docs"]) for h in history] == [(10, 80)] * 6
        assert history[-1]["train_loss"] < history[0]["train_loss"]

    # Both launchers start the same DDP run: the same weights to the bit.
    weights = [(tmp_path / name / "model" / "model.safetensors").read_bytes() for name in LAUNCHERS]
    assert weights[0] == weights[1]
    coder = medcoder.load(tmp_path / "torchrun" / "model")
    metrics = json.loads((tmp_path / "torchrun" / "model" / "metrics.json").read_text())
    assert metrics["test"]["all_gold"]["micro_f1"] > 0.8  # it learned the task (0.889 with torch 2.13)
    top = coder.predict(["patient seen today with fever and a rash, vitals stable"], top_k=2)[0].codes
    assert {c.code for c in top[:2]} == {"R50.9", "R21"}


def test_a_mistake_under_torchrun_is_one_line_not_a_traceback_per_rank(tmp_path) -> None:
    config = write_run(tmp_path, CAML)
    (tmp_path / "notes.jsonl").unlink()  # both ranks have joined the process group when they find out
    done = launch([*LAUNCHERS["torchrun"], MEDCODER, "train", str(config), "-o", "model"], tmp_path)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors and set(errors) == {f"error: {tmp_path / 'notes.jsonl'}: file not found"}  # once a rank at most
    # No rank's traceback (torchrun prefixes a rank's uncaught exception with "[rankN]:"); what follows the
    # error line is torchrun's own summary of the failed processes.
    assert "[rank0]:" not in done.stderr and "[rank1]:" not in done.stderr
    frames = [line for line in done.stderr.splitlines() if line.strip().startswith('File "')]
    assert all("/torch/" in line or "/bin/torchrun" in line for line in frames), frames  # the launcher's own
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.yaml"]


def test_drcaml_description_regulariser_under_ddp(tmp_path) -> None:
    # Three codes kept of six: many notes have none of them, so some batches of 2 hold no positive label
    # and the regulariser has nothing to pull on. DDP still needs a gradient of the description encoder
    # (only the regulariser uses it) from every rank at every step; without one the next step fails.
    drcaml = {
        "type": "drcaml.v1",
        **WORD_MODEL,
        "description_weight": 0.5,
        "train": {"epochs": 2, "batch_size": 2, "lr": 0.03, "num_threads": 1},
    }
    config = write_run(tmp_path, drcaml, labels={"system": "icd10cm", "top_k": 3})
    (tmp_path / "ranks").mkdir()
    worker = [str(TESTS / "ddp_cli.py"), str(tmp_path / "ranks")]  # medcoder.cli.main + a look at the weights
    done = launch([*LAUNCHERS["torchrun"], *worker, "train", str(config), "-o", "model"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert all(r["empty_batches"] > 0 for r in ranks)  # the case that broke DDP happened on both ranks
    # The description encoder's gradients were all-reduced with the rest: the ranks end identical.
    assert ranks[0]["members"] == ranks[1]["members"]
    info = bundle_info(tmp_path / "model")
    history = info["training"]["members"][0]["history"]
    assert info["world_size"] == 2 and [h["batches"] for h in history] == [40, 40]
    assert history[1]["train_loss"] < history[0]["train_loss"]
    coder = medcoder.load(tmp_path / "model")
    assert len(coder.codes) == 3 and coder.predict_proba(["fever and cough"]).shape == (1, 3)
