"""A whole training run interrupted mid-way resumes, when started again, to the same model."""

from __future__ import annotations

import contextlib

import pytest

from medcoder.config import RunConfig, validate
from medcoder.training.run import train_run

RAW = {
    "data": {"source": {"kind": "synthetic", "n_notes": 120, "n_codes": 8, "seed": 4}},
    "model": {
        "type": "caml.v1",
        "encoding": {"max_tokens": 120},
        "embedding": {"dim": 16},
        "kernel_size": 3,
        "num_filters": 8,
        "dropout": 0.3,  # dropout draws from the RNG: the resume must restore it
        "ensemble": 2,  # the interruption lands in the second member
        "train": {"epochs": 4, "batch_size": 8, "checkpoint_every_steps": 3, "num_threads": 1},
    },
}


class Interrupted(Exception):
    pass


class StopAfter:
    """A reporter whose progress callback raises after ``steps`` optimizer steps in total."""

    def __init__(self, steps: int) -> None:
        self.left = steps

    @contextlib.contextmanager
    def task(self, description, total=None):
        def update(done, total_):
            self.left -= 1
            if self.left < 0:
                raise Interrupted

        yield update


def test_interrupted_run_resumes_to_identical_weights(tmp_path) -> None:
    config = validate(RunConfig, RAW, source="test")
    reference = train_run(config, tmp_path / "reference")

    target = tmp_path / "resumed"
    with pytest.raises(Interrupted):
        # 84 training notes / batch 8 = 11 steps an epoch, 44 a member: step 55 is inside member 2
        train_run(config, target, reporter=StopAfter(steps=55))
    assert (tmp_path / "resumed.checkpoints" / "member1" / "last").is_dir()
    assert not target.exists()  # nothing half-written where the model goes
    resumed = train_run(config, target)

    assert (target / "model.safetensors").read_bytes() == (reference.bundle_dir / "model.safetensors").read_bytes()
    assert resumed.metrics["test"] == reference.metrics["test"]
    resumed_from = [m["resumed_from_step"] for m in train_report(target)["members"]]
    assert resumed_from[0] == 44 and 0 < resumed_from[1] < 44  # member 1 was done, member 2 half-way
    assert not (tmp_path / "resumed.checkpoints").exists()  # removed once the model is saved


def train_report(bundle_dir):
    import json

    return json.loads((bundle_dir / "config.json").read_text())["info"]["training"]
