"""Writing files so that a crash, a full disk or an error never leaves half of one.

Every file the commands write goes through here: the content goes to a temporary name in
the same folder, is flushed to disk, and is renamed over the target (``os.replace`` is
atomic on POSIX), so a reader sees the old file or the new one, never a mixture. Folders
(``python -m train.prepare_data``) are built under a temporary name and swapped in whole.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_folder", "atomic_write_bytes", "atomic_write_text", "read_only"]


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically (old content or new, never part)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    # os.open with 0o666 honours the umask (mkstemp's files would be private, 0o600).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Writes ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_folder(out: str | Path) -> Iterator[Path]:
    """Yields an empty temporary folder beside ``out`` that replaces ``out`` on success.

    On an exception the temporary folder is removed and ``out`` (if it existed) is left
    exactly as it was. On success an existing ``out`` is swapped out and removed only after
    the new folder is in place.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    umask = os.umask(0)  # mkdtemp makes a private folder; give it the usual permissions
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_only(path: str | Path) -> bool:
    """Whether the existing file ``path`` must not be replaced: this process cannot write
    it, or its mode gives nobody write access (a user's "keep this"; root, whom the mode
    does not stop, would otherwise replace it silently)."""
    import os

    try:
        return not os.access(path, os.W_OK) or not os.stat(path).st_mode & 0o222
    except OSError:
        return False
