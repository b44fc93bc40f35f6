"""Fault injection on the real commands: every user error a clear message, nothing lost,
nothing poisoned, nothing half-written.

Training runs are subprocesses on the shrunken ``xlstm_tiny`` (``helpers.TINY_TRAIN``),
as a user starts them; errors found before any compute call the commands' ``main`` in
this process (the same code path, without a JAX start-up per case). Each case asserts
the exit code, the message, and that what was there before is intact.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import (
    REPO_ROOT,
    checkpoints_of,
    cli_env,
    metrics_of,
    run_cmd,
    train_cmd,
)

from train import generate as generate_cli
from train import main as train_cli
from train import prepare_data as prepare_cli

# CI runs these in leg 1 only: fault injection through the commands: the loop's and the checkpoint
# files' handling, run on one JAX (the checkpoint round trips and resume run on every JAX in
# test_train_cli.py).
pytestmark = pytest.mark.one_jax


@pytest.fixture(scope="module")
def env():
    return cli_env()


@pytest.fixture(scope="module")
def base(tiny_run) -> Path:
    """One uninterrupted 30-step run (checkpoints 20 and 30; conftest's, shared with
    test_train_cli.py); tests work on copies."""
    return tiny_run[0]


def _copy(base: Path, tmp_path: Path) -> Path:
    workdir = tmp_path / "run"
    shutil.copytree(base, workdir)
    return workdir


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and p.name != ".lock"
    }


def _losses(workdir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in metrics_of(workdir)}


def _largest_data_file(checkpoint: Path, item: str = "opt_state") -> Path:
    files = [p for p in (checkpoint / item).rglob("*") if p.is_file() and "/d/" in str(p)]
    return max(files, key=lambda p: p.stat().st_size)


def _one_message(proc: subprocess.CompletedProcess) -> str:
    """The error paragraph: it starts with ``error:``, and no traceback surrounds it."""
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    errors = [x for x in lines if x.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


# --- checkpoints ----------------------------------------------------------------------


def test_flipped_bytes_in_the_latest_checkpoint_are_found_and_it_is_set_aside(env, base, tmp_path):
    workdir = _copy(base, tmp_path)
    victim = _largest_data_file(workdir / "checkpoints" / "30")
    data = bytearray(victim.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(b ^ 0xFF for b in data[mid : mid + 64])
    victim.write_bytes(bytes(data))

    proc = run_cmd(train_cmd(workdir), env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "do not match their checksums" in proc.stdout, proc.stdout
    assert "resumed from" in proc.stdout and "(step 20)" in proc.stdout
    # Set aside, byte for byte, not deleted.
    moved = workdir / "set_aside" / "30-corrupt"
    assert (moved / victim.relative_to(workdir / "checkpoints" / "30")).read_bytes() == data
    # Steps 21-30 were trained again from checkpoint 20 with the same losses.
    assert _losses(workdir) == _losses(base)
    assert checkpoints_of(workdir) == [20, 30]


def test_truncated_files_and_stray_entries_fall_back_to_the_newest_good_checkpoint(
    env, base, tmp_path
):
    workdir = _copy(base, tmp_path)
    victim = _largest_data_file(workdir / "checkpoints" / "30")
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    # Debris a crash can leave: an uncommitted (interrupted) save and unrelated files.
    shutil.copytree(
        workdir / "checkpoints" / "20", workdir / "checkpoints" / "35.orbax-checkpoint-tmp-7"
    )
    (workdir / "checkpoints" / "notes.txt").write_text("stray")

    proc = run_cmd(train_cmd(workdir), env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "checkpoint" in proc.stdout and "trying the checkpoint before it" in proc.stdout
    assert "(step 20)" in proc.stdout
    assert (workdir / "set_aside" / "30-corrupt").is_dir()
    assert (workdir / "checkpoints" / "notes.txt").read_text() == "stray"
    assert _losses(workdir) == _losses(base)


def test_sampling_reads_the_newest_intact_checkpoint_and_moves_nothing(base, tmp_path):
    from train.runs.load import load_run

    workdir = _copy(base, tmp_path)
    victim = _largest_data_file(workdir / "checkpoints" / "30", "params")  # what it reads
    victim.write_bytes(victim.read_bytes()[:100])
    before = _snapshot(workdir)
    notes = []
    run = load_run(workdir, say=notes.append)
    assert run.step == 20 and "checkpoint" in notes[0] and "/30" in notes[0]
    assert load_run(workdir, step=20, say=notes.append).step == 20
    assert _snapshot(workdir) == before  # a reader leaves the run as it found it


@pytest.mark.slow
def test_when_no_checkpoint_can_be_read_the_run_stops_and_moves_nothing(env, base, tmp_path):
    workdir = _copy(base, tmp_path)
    for step in (20, 30):
        for f in (workdir / "checkpoints" / str(step)).rglob("*"):
            if f.is_file() and "/d/" in str(f):
                f.write_bytes(b"garbage")
    before = _snapshot(workdir)
    proc = run_cmd(train_cmd(workdir), env)
    assert proc.returncode == 1
    message = proc.stderr[proc.stderr.index("error: ") :]
    assert "no checkpoint in" in message and "can be restored" in message
    assert "/20" in message and "/30" in message and "Nothing was deleted" in message
    assert "Traceback" not in proc.stderr
    assert _snapshot(workdir) == before


@pytest.mark.slow
def test_resume_step_picks_a_checkpoint_and_sets_the_newer_ones_aside(env, base, tmp_path):
    workdir = _copy(base, tmp_path)
    proc = run_cmd(train_cmd(workdir, flags=("--resume-step", "20")), env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "moved checkpoint 30" in proc.stdout and "(step 20)" in proc.stdout
    assert (workdir / "set_aside" / "30-newer").is_dir()
    assert _losses(workdir) == _losses(base)
    before = _snapshot(workdir)
    proc = run_cmd(train_cmd(workdir, flags=("--resume-step", "5")), env)
    assert proc.returncode == 2  # found before anything is written
    message = _one_message(proc)
    assert "there is no checkpoint 5" in message and "checkpoints are at steps" in message, message
    assert _snapshot(workdir) == before


def test_a_non_finite_state_is_never_saved(tmp_path):
    import jax.numpy as jnp

    from train.runs.checkpoint import Checkpointer, NonFiniteStateError

    ckpt = Checkpointer(tmp_path / "checkpoints", keep=2, async_save=False)
    good = {"params": {"w": jnp.ones((4, 3))}, "opt_state": {"m": jnp.zeros((4, 3))}}
    ckpt.save(1, good, {"step": 1})
    bad = {"params": {"w": jnp.ones((4, 3)).at[2, 1].set(jnp.nan)}, "opt_state": good["opt_state"]}
    with pytest.raises(NonFiniteStateError, match=r"params\['w'\].*checkpoint 2 was not saved"):
        ckpt.save(2, bad, {"step": 2})
    assert ckpt.all_steps() == [1]
    ckpt.close()


def test_checksums_find_a_changed_array_and_restore_falls_back(tmp_path):
    import jax
    import jax.numpy as jnp

    from train.runs.checkpoint import Checkpointer, CheckpointError

    state = {"params": {"w": jnp.arange(12.0).reshape(4, 3)}, "opt_state": {"n": jnp.int32(3)}}
    ckpt = Checkpointer(tmp_path / "checkpoints", keep=3, async_save=False)
    ckpt.save(1, state, {"step": 1, "model_config": {}})
    ckpt.save(2, jax.tree.map(lambda x: x + 1, state), {"step": 2, "model_config": {}})
    ckpt.close()
    # Tamper with checkpoint 2's recorded checksum: the arrays no longer match it.
    meta_file = next((tmp_path / "checkpoints" / "2" / "meta").rglob("metadata"))
    meta = json.loads(meta_file.read_text())
    meta["checksums"]["params"]["['w']"] ^= 1
    meta_file.write_text(json.dumps(meta))

    ckpt = Checkpointer(tmp_path / "checkpoints", keep=3, async_save=False)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
    notes = []
    step, restored, _ = ckpt.restore_latest(abstract, {}, notes.append)
    assert step == 1 and "do not match their checksums" in notes[0]
    np.testing.assert_array_equal(restored["params"]["w"], state["params"]["w"])
    with pytest.raises(CheckpointError, match="do not match their checksums"):
        ckpt.restore_latest(abstract, {}, notes.append, step=2)
    assert ckpt.all_steps() == [1, 2]  # a reader moves nothing
    ckpt.close()


def test_checksums_keep_their_formula_so_older_checkpoints_still_verify():
    """The checksum is computed shard-wise (no flattening reshape) but must equal the one
    written before: sum of bits * (flat position * 2654435761 + 1), mod 2**32."""
    import jax.numpy as jnp

    from train.runs.checkpoint import state_report

    rng = np.random.default_rng(0)
    tree = {
        "f32": rng.normal(size=(5, 7, 3)).astype(np.float32),
        "bf16": rng.normal(size=(6, 4)).astype(jnp.bfloat16),
        "i8": rng.integers(-100, 100, size=(9,)).astype(np.int8),
        "bool": rng.random((3, 3)) > 0.5,
    }
    sums, bad = state_report({k: jnp.asarray(v) for k, v in tree.items()})
    assert bad == []
    for name, v in tree.items():
        unsigned = {4: np.uint32, 2: np.uint16, 1: np.uint8}[v.dtype.itemsize]
        bits = v.reshape(-1).view(unsigned).astype(np.uint64)
        w = np.arange(bits.size, dtype=np.uint64) * 2654435761 + 1
        assert sums[f"['{name}']"] == int((bits * w).sum() % 2**32), name


# --- non-finite values ----------------------------------------------------------------


def test_a_huge_lr_never_leaves_a_poisoned_checkpoint_and_the_advice_works(env, tmp_path):
    workdir = tmp_path / "run"
    sets = ("schedule.warmup_steps=0", "checkpoint.every=1")
    proc = run_cmd(train_cmd(workdir, "optimizer.lr=1e6", *sets), env)
    assert proc.returncode == 1
    message = _one_message(proc)
    assert "loss became nan at step 2" in message and "set_aside/1-non-finite-loss" in message
    assert checkpoints_of(workdir) == []
    # Following the message's advice (a lower LR) now trains instead of failing again.
    proc = run_cmd(train_cmd(workdir, "optimizer.lr=1e-3", *sets, "train.steps=3"), env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" not in proc.stdout and checkpoints_of(workdir)[-1] == 3


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("optimizer.lr=inf", "give a finite number"),
        ("optimizer.lr=nan", "give a finite number"),
        ("optimizer.weight_decay=-inf", "give a finite number"),
        ("data.val_fraction=nan", "give a finite number"),
    ],
)
def test_inf_and_nan_options_are_refused_before_anything_is_written(
    tmp_path, capsys, setting, message
):
    workdir = tmp_path / "w"
    args = ["--config", "xlstm_tiny", "--workdir", str(workdir), "--set", setting]
    assert train_cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and setting.split("=")[0] in err
    assert not workdir.exists()


# --- config.json and metrics.jsonl ----------------------------------------------------


@pytest.mark.slow
@pytest.mark.os_faults
def test_half_written_config_and_metrics_do_not_block_a_resume(env, base, tmp_path, capsys):
    workdir = _copy(base, tmp_path)
    config = (workdir / "config.json").read_text()
    (workdir / "config.json").write_text(config[: len(config) // 2])
    # A generation command on the damaged run says what to do.
    code = generate_cli.main(["--workdir", str(workdir), "--prompt", "x"])
    err = capsys.readouterr().err
    assert code == 2 and "config.json cannot be read" in err and "rewrites it" in err
    with (workdir / "metrics.jsonl").open("a") as f:
        f.write('{"step": 31, "lo')  # the last line of a run killed mid-write

    proc = run_cmd(train_cmd(workdir, "train.steps=40"), env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "was unreadable" in proc.stdout
    assert json.loads((workdir / "config.json").read_text())["train"]["steps"] == 40
    assert [r["step"] for r in metrics_of(workdir)] == list(range(1, 41))


# --- the workdir ----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.os_faults
def test_one_run_per_workdir_and_a_dead_holder_is_taken_over(env, tmp_path):
    workdir = tmp_path / "run"
    first = subprocess.Popen(
        train_cmd(workdir, "train.steps=100000", "checkpoint.every=100000"),
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        lock = workdir / ".lock"
        deadline = time.time() + 120
        while time.time() < deadline and not (lock.exists() and lock.read_text().strip()):
            time.sleep(0.1)
        assert json.loads(lock.read_text())["pid"] == first.pid
        second = run_cmd(train_cmd(workdir), env)
        assert second.returncode == 2
        message = _one_message(second)
        assert f"in use by another run (PID {first.pid}" in message
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    # The killed run's lock file is still there (with its PID), its lock is not.
    assert json.loads(lock.read_text())["pid"] == first.pid
    third = run_cmd(train_cmd(workdir, "train.steps=2", "train.eval_every=0"), env)
    assert third.returncode == 0, third.stderr[-3000:]
    assert f"took over {lock} from PID {first.pid}" in third.stdout


def test_a_workdir_that_is_a_file_is_refused(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("keep me")
    assert train_cli.main(["--config", "xlstm_tiny", "--workdir", str(target)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert target.read_text() == "keep me"
    assert train_cli.main(["--config", "xlstm_tiny", "--workdir", str(target / "sub")]) == 2
    assert "is a file" in capsys.readouterr().err


@pytest.fixture
def tmpfs(tmp_path):
    """A small tmpfs at ``tmp_path/mnt`` (needs root: skipped with the reason elsewhere)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or 'not root'})")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _remount(mnt: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(mnt)], check=True)


@pytest.mark.slow
@pytest.mark.os_faults
def test_a_full_disk_during_a_save_is_one_message_and_the_rerun_resumes(env, base, tmpfs):
    workdir = tmpfs / "run"  # 2 MB: the first checkpoint fits, a later one does not
    proc = run_cmd(train_cmd(workdir, "logging.progress_bar=false"), env)
    assert proc.returncode == 1
    message = _one_message(proc)
    assert "the disk is full (No space left on device)" in message
    assert "Nothing earlier was lost" in message and "then rerun the same command" in message
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-3000:]
    kept = checkpoints_of(workdir)
    assert kept and kept[-1] < 30
    _remount(tmpfs, "size=64m")  # space freed
    proc = run_cmd(train_cmd(workdir), env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"(step {kept[-1]})" in proc.stdout
    assert _losses(workdir) == _losses(base)


@pytest.mark.slow
@pytest.mark.os_faults
def test_a_read_only_workdir_is_refused_before_anything(env, base, tmpfs):
    _remount(tmpfs, "size=64m")
    workdir = tmpfs / "run"
    shutil.copytree(base, workdir)
    _remount(tmpfs, "ro")
    proc = run_cmd(train_cmd(workdir, "train.steps=40"), env)
    assert proc.returncode == 2
    assert "is not writable" in _one_message(proc)
    proc = run_cmd(train_cmd(tmpfs / "new"), env)
    assert proc.returncode == 2 and "is not writable" in _one_message(proc)


# --- data -----------------------------------------------------------------------------


def _write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def _bad_data(tmp: Path) -> dict[str, tuple[list[str], list[str]]]:
    good = b'{"text": "hello"}\n'
    files = {
        "a.jsonl": good + good + b"{oops\n",
        "b.jsonl": good + b'{"text": "\xff\xfe"}\n',
        "c.jsonl": good + b'{"text": [1, 2]}\n',
        "d.jsonl": b"[1, 2]\n",
        "e.parquet": b"just text",
        "tok/tokenizer.json": b"{not json",
    }
    paths = {name: _write(tmp / name, data) for name, data in files.items()}

    def path(name: str) -> list[str]:
        return [f"data.path={paths[name]}"]

    return {
        "malformed JSONL": (path("a.jsonl"), ["a.jsonl:3", "not valid JSON"]),
        "non-UTF-8 JSONL": (path("b.jsonl"), ["b.jsonl:2", "not UTF-8"]),
        "non-string text field": (path("c.jsonl"), ["c.jsonl:2", "is a list, not a string"]),
        "a JSON array line": (path("d.jsonl"), ["d.jsonl:1", "not an object"]),
        "a .parquet that is not Parquet": (
            path("e.parquet"),
            ["e.parquet is not a readable Parquet file"],
        ),
        "an invalid tokenizer file": (
            [f"data.tokenizer={paths['tok/tokenizer.json']}"],
            ["is not a valid tokenizer.json"],
        ),
        "a tokenizer typo": (["data.tokenizer=byte"], ["did you mean 'bytes'?"]),
        "an unknown tokenizer word": (["data.tokenizer=mytok"], ["is not a known tokenizer"]),
    }


CASES = [
    "malformed JSONL",
    "non-UTF-8 JSONL",
    "non-string text field",
    "a JSON array line",
    "a .parquet that is not Parquet",
    "an invalid tokenizer file",
    "a tokenizer typo",
    "an unknown tokenizer word",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_data_is_one_message_naming_the_file_and_line(tmp_path, capsys, case):
    sets, fragments = _bad_data(tmp_path / "data")[case]
    workdir = tmp_path / "w"
    t0 = time.time()
    code = train_cli.main(["--config", "xlstm_tiny", "--workdir", str(workdir), "--set", *sets])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and all(f in err for f in fragments), err
    assert not workdir.exists()  # refused before the workdir was made
    assert time.time() - t0 < 30  # no network retries


def test_training_on_a_damaged_prepared_folder_says_rebuild(tmp_path, capsys):
    out = tmp_path / "prepared"
    src = _write(tmp_path / "docs" / "a.txt", "some text " * 500)
    assert prepare_cli.main(["--data", str(src.parent), "--out", str(out)]) == 0
    capsys.readouterr()
    train_bin = out / "train.bin"
    train_bin.write_bytes(train_bin.read_bytes()[:100])
    code = train_cli.main(
        ["--config", "xlstm_tiny", "--workdir", str(tmp_path / "w"), "--set", f"data.path={out}"]
    )
    err = capsys.readouterr().err
    assert code == 2 and "holds 100 bytes but" in err and "rebuild it with" in err


def test_prepare_data_never_destroys_an_earlier_output(tmp_path, capsys):
    docs = tmp_path / "docs"
    _write(docs / "a.txt", "first document " * 200)
    _write(docs / "b.jsonl", '{"text": "second"}\n' * 50)
    out = tmp_path / "prepared"
    assert prepare_cli.main(["--data", str(docs), "--out", str(out)]) == 0
    before = _snapshot(out)
    capsys.readouterr()

    # A typo in the source: refused before anything is written.
    assert prepare_cli.main(["--data", str(docs) + "x", "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    # Bad data found half-way through: the temporary output is dropped.
    _write(docs / "c.jsonl", '{"text": "ok"}\n{broken\n')
    assert prepare_cli.main(["--data", str(docs), "--out", str(out)]) == 2
    assert "c.jsonl:2" in capsys.readouterr().err
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs", "prepared"]  # no debris
    # A folder with other files in it is never replaced.
    (docs / "c.jsonl").unlink()
    foreign = tmp_path / "mine"
    _write(foreign / "thesis.tex", "precious")
    assert prepare_cli.main(["--data", str(docs), "--out", str(foreign)]) == 2
    assert "with other files in it" in capsys.readouterr().err
    assert (foreign / "thesis.tex").read_text() == "precious"
    # A good rerun replaces the old output whole.
    assert prepare_cli.main(["--data", str(docs), "--out", str(out), "--val-fraction", "0"]) == 0
    assert json.loads((out / "meta.json").read_text())["val_fraction"] == 0


# --- sampling arguments, --debug ------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--max-new-tokens", "0"], "--max-new-tokens 0"),
        (["--temperature", "-1"], "--temperature -1.0"),
        (["--temperature", "nan"], "--temperature nan"),
        (["--top-p", "1.5"], "--top-p 1.5"),
        (["--top-k", "0"], "--top-k 0"),
    ],
)
def test_bad_sampling_arguments_name_the_flag(tmp_path, capsys, args, flag):
    code = generate_cli.main(["--workdir", str(tmp_path), "--prompt", "x", *args])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and flag in err, err


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    from train.config import ConfigError

    args = ["--config", "xlstm_tiny", "--workdir", str(tmp_path / "w"), "--set", "train.stepz=1"]
    with pytest.raises(ConfigError, match="unknown config key"):
        train_cli.main(["--debug", *args])
    monkeypatch.setenv("XLSTM_JAX_DEBUG", "1")
    with pytest.raises(ConfigError):
        train_cli.main(args)
    monkeypatch.delenv("XLSTM_JAX_DEBUG")
    assert train_cli.main(args) == 2


def test_help_of_the_training_and_sampling_commands_needs_no_jax():
    # Their parsers (the error module included) import no JAX, so --help is instant.
    code = "import sys, train.main, train.generate; assert 'jax' not in sys.modules, 'jax imported'"
    subprocess.run([os.sys.executable, "-c", code], cwd=REPO_ROOT, check=True, timeout=60)


@pytest.mark.parametrize("command", ["main", "generate", "forecast", "prepare_data"])
def test_every_commands_help_lists_its_exit_codes(command, capsys):
    import importlib

    module = importlib.import_module(f"train.{command}")
    with pytest.raises(SystemExit) as e:
        module.main(["--help"])
    assert e.value.code == 0
    codes = capsys.readouterr().out.split("exit codes:\n", 1)[1].splitlines()
    assert codes[0] == "  0 done" or codes[0].startswith("  0 done,")
    assert any(c.startswith("  2 ") and "before anything" in c for c in codes), codes
    assert any(c.startswith("  1 ") for c in codes), codes
