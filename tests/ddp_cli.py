"""``medcoder train`` under a launcher, plus a look at every rank's trained weights; run by ``test_distributed.py``::

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_cli.py WEIGHTS_DIR train CONFIG -o OUT

Runs the real command line (``medcoder.cli.main`` with the arguments after WEIGHTS_DIR) with two
test-side wrappers, so the library keeps no debug hook: when a rank's ``TorchCoder.fit`` returns it
writes WEIGHTS_DIR/rank{r}.json with the SHA-256 of each trained network's weights (names, shapes and
bytes), and the number of DR-CAML training batches in which no label was positive (the regulariser
then has nothing to pull on).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from medcoder.cli import main
from medcoder.models.networks.cnn import DRCAML
from medcoder.models.torch_coder import TorchCoder

_fit, _regularizer = TorchCoder.fit, DRCAML.regularizer
_empty_batches = [0]


def _digest(network) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(network.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _recording_fit(self, *args, **kwargs):
    result = _fit(self, *args, **kwargs)
    record = {
        "rank": int(os.environ["RANK"]),
        "world": int(os.environ["WORLD_SIZE"]),
        "members": [_digest(network) for network in self.members_],
        "empty_batches": _empty_batches[0],
    }
    (Path(sys.argv[1]) / f"rank{record['rank']}.json").write_text(json.dumps(record), encoding="utf-8")
    return result


def _counting_regularizer(self, labels):
    if self.training and int((labels > 0).sum()) == 0:
        _empty_batches[0] += 1
    return _regularizer(self, labels)


if __name__ == "__main__":
    TorchCoder.fit = _recording_fit
    DRCAML.regularizer = _counting_regularizer
    raise SystemExit(main(sys.argv[2:]))
