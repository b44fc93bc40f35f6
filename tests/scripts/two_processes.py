"""One of two real processes (2 simulated CPU devices each; see test_train_sharded.py).

Usage: two_processes.py PROCESS_ID PORT OUTDIR OVERRIDE...

Three runs of the shrunken tiny config with FSDP over all 4 devices (so every sharded
array spans both processes), each checked right after its train state is filled: this
process holds only its own shards of it (every live array's bytes on this process's
devices add up to its shards of the state and the model's small replicated rest; nothing
gathered) and about half the state.

1. ``python -m train.main``'s own entry (``jax.distributed`` from its flags), fresh.
2. Fine-tuning from run 1's folder (``train.init_from``), 1 step.
3. Run 1 resumed from its checkpoint for one more step.

Process 0 prints one JSON line: the checks of each run.
"""

import gc
import json
import sys
from pathlib import Path

import jax

from train import main as train_cli
from train.config import named
from train.config.overrides import apply_overrides
from train.loop import driver
from train.loop import train as run_train

process, port, out = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
overrides = [*sys.argv[4:], "mesh.fsdp=-1"]
checks = []
restore = driver.restore


def checked_restore(setup, ckpt, resume_step, say):
    start = restore(setup, ckpt, resume_step, say)
    gc.collect()  # arrays of an earlier run in this process
    local = {d.id for d in jax.local_devices()}

    def own_bytes(tree) -> int:
        return sum(s.data.nbytes for x in jax.tree.leaves(tree) for s in x.addressable_shards)

    assert all(
        s.device.id in local for x in jax.tree.leaves(setup.state) for s in x.addressable_shards
    )
    state = own_bytes(setup.state)
    checks.append(
        {
            "start": start,
            "state_global": sum(x.nbytes for x in jax.tree.leaves(setup.state)),
            "state_own": state,
            "rest_own": own_bytes(setup.rest),
            # Every buffer this process holds on its devices (a global array's shards also
            # appear as arrays of their own: counted once, by address).
            "live_own": sum(
                {
                    s.data.unsafe_buffer_pointer(): s.data.nbytes
                    for x in jax.live_arrays()
                    for s in x.addressable_shards
                    if s.device.id in local
                }.values()
            ),
        }
    )
    return start


driver.restore = checked_restore
base = ["--config", "xlstm_tiny", "--coordinator-address", f"127.0.0.1:{port}"]
base += ["--num-processes", "2", "--process-id", str(process)]
code = train_cli.main([*base, "--workdir", str(out / "run"), "--set", *overrides])
assert code == 0, code
cfg = apply_overrides(named.load("xlstm_tiny"), overrides)
steps = cfg.train.steps
run_train(apply_overrides(cfg, [f"train.init_from={out / 'run'}", "train.steps=1"]), out / "tuned")
run_train(apply_overrides(cfg, [f"train.steps={steps + 1}"]), out / "run")
if process == 0:
    print(json.dumps(checks))
