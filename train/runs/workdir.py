"""The run's folder: checked before anything is written, and held by one run at a time.

``check_workdir`` refuses, without touching the disk, a workdir that is a file, lies under a
file, cannot be written, or holds something other than a run (a pretrained checkpoint, a data
set, a user's files: a run would write its ``config.json`` over theirs). ``WorkdirLock`` is an
exclusive ``fcntl`` lock on ``WORKDIR/.lock`` that names its holder (PID, host, start time):
a second run in the same folder stops with that name instead of interleaving its metrics and
checkpoints with the first. The kernel releases the lock when its process dies, so a lock
file left by a killed run is simply taken over.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from xlstm_jax.formats.jsonfile import read_json
from xlstm_jax.layers.config import ConfigError

__all__ = ["LOCK_NAME", "WorkdirError", "WorkdirLock", "check_workdir"]

LOCK_NAME = ".lock"


class WorkdirError(ConfigError):
    """The workdir cannot be used (a file, not writable, not a run's, or held by another run)."""


# What a run writes into its workdir (docs/training.md, "Outputs"); config.json is a run's
# only with a "model" section.
_RUN_NAMES = {
    "config.json",
    "checkpoints",
    "metrics.jsonl",
    "loss_curve.png",
    LOCK_NAME,
    "set_aside",
}
# Files that make a folder a checkpoint of its own (train.generate --pretrained, --init-from).
_CHECKPOINT_NAMES = {"config.yaml", "model.ckpt"}


def check_workdir(workdir: Path) -> None:
    """Raises ``WorkdirError`` when ``workdir`` could not be created or written, or is an
    existing folder that is not a run's (empty, new and ``train.main`` run folders pass).

    Nothing is created: the nearest existing folder on the way is checked instead.
    """
    workdir = Path(workdir)
    if workdir.exists() and not workdir.is_dir():
        raise WorkdirError(
            f"--workdir {workdir} is a file, not a folder; give a folder (it is created "
            f"if missing)."
        )
    probe = workdir
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise WorkdirError(
            f"--workdir {workdir} cannot be created: {probe} is a file. Give another folder."
        )
    if not _writable(probe):
        what = "" if probe == workdir else f" (it would be created in {probe})"
        raise WorkdirError(
            f"--workdir {workdir} is not writable{what}: permission denied or a read-only "
            f"disk. Give a folder you can write to, e.g. --workdir runs/NAME."
        )
    if probe == workdir:
        _check_contents(workdir)


def _check_contents(workdir: Path) -> None:
    """Refuses a folder holding a checkpoint, or only things a run never writes."""
    try:
        names = sorted(p.name for p in workdir.iterdir())
    except OSError as e:
        raise WorkdirError(
            f"--workdir {workdir} cannot be listed ({e.strerror}); give a folder you can read "
            f"and write, e.g. --workdir runs/NAME."
        ) from None
    foreign = [n for n in names if not _written_by_runs(n)]
    config = _config_kind(workdir / "config.json") if "config.json" in names else None
    is_run = config == "run" or bool({"checkpoints", "metrics.jsonl"} & set(names))
    if config == "other":
        foreign.insert(0, 'config.json (without the "model" section of a run\'s config)')
    elif config == "unreadable" and not is_run:
        foreign.insert(0, "config.json (not JSON)")
    checkpoint = [n for n in foreign if n in _CHECKPOINT_NAMES or n.endswith(".safetensors")] + (
        ["config.json"] if config == "other" else []
    )
    # A run folder may hold a user's notes beside it; those are never written over.
    if not checkpoint and (is_run or not foreign):
        return
    shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
    what = "a checkpoint folder" if checkpoint else "not a run folder of train.main"
    hint = f"; to fine-tune from this checkpoint, add --init-from {workdir}" if checkpoint else ""
    raise WorkdirError(
        f"--workdir {workdir} is {what}: it holds {shown}. A run writes its config.json, "
        f"checkpoints/ and metrics.jsonl into the workdir, so the workdir must be an empty or "
        f"new folder, or a run folder of train.main (to resume it). Nothing was written. Give "
        f"another --workdir, e.g. --workdir runs/NAME{hint}."
    )


def _written_by_runs(name: str) -> bool:
    # Dot-files ending .tmp are left by a run killed during an atomic write (train.files).
    return (
        name in _RUN_NAMES
        or name.startswith("events.out.tfevents.")
        or name.startswith(".write-test-")
        or (name.startswith(".") and name.endswith(".tmp"))
    )


def _config_kind(path: Path) -> str:
    """ "run" (a JSON object with a "model" section), "unreadable" (not JSON: a run killed while
    writing it) or "other" (JSON of something else, or not a file)."""
    if not path.is_file() or path.stat().st_size > 1 << 20:  # a run's is a few KB
        return "other"
    try:
        raw = read_json(path, ConfigError, "")
    except ConfigError:
        return "unreadable"
    return "run" if isinstance(raw, dict) and isinstance(raw.get("model"), dict) else "other"


def _writable(folder: Path) -> bool:
    # os.access ignores read-only mounts for root and some network file systems, so try.
    try:
        fd = os.open(folder / f".write-test-{os.getpid()}", os.O_CREAT | os.O_WRONLY | os.O_EXCL)
    except FileExistsError:
        return True
    except OSError:
        return False
    os.close(fd)
    os.unlink(folder / f".write-test-{os.getpid()}")
    return True


class WorkdirLock:
    """Holds ``WORKDIR/.lock`` exclusively until ``release`` (or the process's end).

    Raises:
        WorkdirError: another live process holds the lock (the message names it).
    """

    def __init__(self, workdir: Path):
        self.path = Path(workdir) / LOCK_NAME
        self.took_over: dict | None = None
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            who = (
                f"PID {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}"
                if holder
                else "another process"
            )
            raise WorkdirError(
                f"{workdir} is in use by another run ({who}). Wait for it to finish, stop it, "
                f"or use another --workdir; two runs in one folder would mix their "
                f"checkpoints and metrics."
            ) from None
        previous = _read_holder(fd)
        if previous and previous.get("pid") != os.getpid():
            self.took_over = previous  # its process is gone: the kernel dropped its lock
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        """Lets other runs use the workdir (the file stays; it is rewritten by the next)."""
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _read_holder(fd: int) -> dict | None:
    try:
        raw = os.pread(fd, 4096, 0).decode("utf-8", errors="replace").strip()
        holder = json.loads(raw) if raw else None
    except (OSError, ValueError, RecursionError):
        return None
    # Another program may have written anything there: only a JSON object names a holder.
    return holder if isinstance(holder, dict) else None
