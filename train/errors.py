"""One error path for every command: user errors become a message and an exit code.

Each command's ``main`` runs its body through ``run_command``. A user error (a bad config,
data file, argument, workdir, an incompatible or corrupt run, a full or read-only disk)
prints one paragraph starting ``error:`` that names the problem, the file or key, and the
fix, and exits non-zero without a traceback. ``--debug`` (every command has it) or
``XLSTM_JAX_DEBUG=1`` re-raises instead, so the traceback is there when it is wanted.
Anything else is a bug and keeps its traceback.

Exit codes: 2 for errors found before any compute (config, data, arguments, workdir);
1 for errors of a run that had started (checkpoints, non-finite values, the disk).
"""

from __future__ import annotations

import errno
import logging
import os
import sys
import threading
from collections.abc import Callable

__all__ = [
    "DEBUG_ENV",
    "DataError",  # noqa: F822 - made on first use, by __getattr__ below
    "RunError",
    "debug_enabled",
    "disk_error",
    "quiet_library_logs",
    "run_command",
]

DEBUG_ENV = "XLSTM_JAX_DEBUG"

# errno values that mean "the filesystem refused" rather than "the program is wrong".
_FS_ERRNOS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a path component is a file, not a folder",
    errno.EISDIR: "the path is a folder, not a file",
}
# Orbax and tensorstore often report filesystem failures as text inside another exception.
_FS_TEXT = {
    "No space left on device": errno.ENOSPC,
    "Disk quota exceeded": errno.EDQUOT,
    "Read-only file system": errno.EROFS,
    "Permission denied": errno.EACCES,
}


class RunError(RuntimeError):
    """A run that had started cannot go on; the message says what is kept and what to do."""


def _data_error() -> type:
    from xlstm_jax.layers.config import ConfigError

    class DataError(ConfigError):
        """Data or tokenizer problem found before any compute; the message names the fix."""

    DataError.__module__, DataError.__qualname__ = __name__, "DataError"
    return DataError


def __getattr__(name: str):
    # ``DataError`` subclasses the library's ``ConfigError``, and importing the library
    # pulls in JAX; every parser imports this module and ``--help`` must stay instant, so
    # the class is made on first use (once: it is then a module global).
    if name == "DataError":
        cls = globals()["DataError"] = _data_error()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def debug_enabled(argv_flag: bool = False) -> bool:
    """Whether tracebacks were asked for (``--debug`` or ``XLSTM_JAX_DEBUG=1``)."""
    return argv_flag or os.environ.get(DEBUG_ENV, "0") not in ("", "0", "false", "False")


def _fs_errno(exc: BaseException) -> int | None:
    """The filesystem errno behind ``exc`` (following its causes), if there is one."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _FS_ERRNOS:
            return exc.errno
        text = str(exc)
        for needle, code in _FS_TEXT.items():
            if needle in text:
                return code
        exc = exc.__cause__ or exc.__context__
    return None


def disk_error(exc: BaseException, doing: str, keeps: str) -> RunError | None:
    """A ``RunError`` for a filesystem failure while ``doing`` something, or None.

    Args:
        exc: the exception raised (an ``OSError``, or an Orbax/tensorstore error whose
            text carries the OS error).
        doing: what was being written, e.g. "saving checkpoint 40 in runs/x/checkpoints".
        keeps: what is intact, e.g. "the last complete checkpoint (step 30) is kept".
    """
    code = _fs_errno(exc)
    if code is None:
        return None
    fix = {
        errno.ENOSPC: "free some space (or point --workdir at another disk)",
        errno.EDQUOT: "free some space (or point --workdir at another disk)",
        errno.EROFS: "use a --workdir on a writable disk",
    }.get(code, "use a --workdir you can write to")
    return RunError(
        f"{doing} failed: {_FS_ERRNOS[code]} ({os.strerror(code)}). Nothing earlier was "
        f"lost: {keeps}. To go on, {fix}, then rerun the same command."
    )


def quiet_library_logs() -> None:
    """Keeps Orbax's, tensorstore's and asyncio's warnings and error dumps off the user's
    screen: when a save fails they repeat, hundreds of lines long and from background
    threads, what the one error message says. The same for the Hugging Face hub's retry
    warnings: a tokenizer that cannot be fetched gets one message of its own."""
    for name in ("absl", "orbax", "asyncio", "jax._src.distributed", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.FATAL)
    except ImportError:  # absl comes with JAX; be safe anyway
        pass
    # Orbax's background writers leave callbacks that fire after their event loop closed,
    # and coroutines that die at interpreter exit; both only print.
    default_excepthook, default_thread_hook = sys.excepthook, threading.excepthook

    def excepthook(kind, value, tb):
        if not _is_background_noise(value):
            default_excepthook(kind, value, tb)

    def thread_hook(args):
        if not _is_background_noise(args.exc_value):
            default_thread_hook(args)

    sys.excepthook, threading.excepthook = excepthook, thread_hook
    sys.unraisablehook = lambda unraisable: None


def _is_background_noise(exc: BaseException | None) -> bool:
    return isinstance(exc, RuntimeError) and "Event loop is closed" in str(exc)


def run_command(body: Callable[[], int], *, debug: bool = False) -> int:
    """Runs a command's ``body``; turns user errors into one message and an exit code.

    Returns:
        ``body``'s exit code, 2 for a ``ConfigError`` (config, data, arguments, workdir),
        1 for a ``RunError`` or a filesystem failure. With ``debug`` (or
        ``XLSTM_JAX_DEBUG=1``) errors propagate with their tracebacks.
    """
    # Imported here: --help must not wait for JAX (this module is imported by every parser).
    from xlstm_jax.layers.config import ConfigError

    debug = debug_enabled(debug)
    if not debug:
        quiet_library_logs()
    try:
        return body()
    except ConfigError as e:  # includes DataError and train.runs.workdir.WorkdirError
        if debug:
            raise
        _say(e)
        return 2
    except RunError as e:
        if debug:
            raise
        _say(e)
        return 1
    except OSError as e:
        if debug:
            raise
        doing = f"using {e.filename}" if e.filename else "a file operation"
        wrapped = disk_error(e, doing, "files written before this one are intact")
        if wrapped is None:
            raise
        _say(wrapped)
        return 1


def _say(exc: BaseException) -> None:
    print(f"error: {exc}", file=sys.stderr, flush=True)
