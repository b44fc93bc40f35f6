"""Run under 8 simulated CPU devices (see test_train_sharded.py).

Trains the shrunken tiny config through ``train.loop.train`` on several meshes, and
checkpoints on (2, 2, 2) to resume on (4, 2, 1). Prints one JSON line of losses per run.
Usage: train_meshes.py OUTDIR OVERRIDE...
"""

import json
import shutil
import sys
from pathlib import Path

from train.config import named
from train.config.overrides import apply_overrides
from train.loop import train
from train.runs.metrics import read_metrics

out, overrides = Path(sys.argv[1]), sys.argv[2:]


def run(name: str, mesh, extra=()) -> list[float]:
    sets = [
        *overrides,
        f"mesh.data={mesh[0]}",
        f"mesh.fsdp={mesh[1]}",
        f"mesh.tensor={mesh[2]}",
        *extra,
    ]
    train(apply_overrides(named.load("xlstm_tiny"), sets), out / name)
    return [r["loss"] for r in read_metrics(out / name / "metrics.jsonl")]


# Data, and all three axes at once ((1, 4, 2) and (1, 8, 1) were dropped for CI's time:
# (2, 2, 2) and the resumed (4, 2, 1) cover FSDP with tensor parallelism, and the test's two
# processes pure FSDP over four devices).
losses = {str(m): run(f"mesh{m[0]}{m[1]}{m[2]}", m) for m in [(8, 1, 1), (2, 2, 2)]}
# Interrupted on (2, 2, 2) after 2 steps, resumed on (4, 2, 1); the checkpoint is also kept
# for the test to resume on one device.
run("ckpt", (2, 2, 2), ["train.stop_after=2"])
shutil.copytree(out / "ckpt", out / "ckpt_for_1")
losses["resumed_421"] = run("ckpt", (4, 2, 1))
print(json.dumps(losses))
