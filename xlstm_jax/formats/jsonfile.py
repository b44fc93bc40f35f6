"""Reading a small JSON file that nobody vouches for (a config, an index, a metadata record).

``read_json`` turns every way such a file can be wrong (unreadable, too large, not UTF-8,
not JSON, nested too deeply for the parser, a key given twice, ``NaN``/``Infinity`` which
JSON does not have) into the caller's error class with one paragraph naming the file and
the fix, so that no ``UnicodeDecodeError``, ``RecursionError`` or ``JSONDecodeError``
traceback ever reaches a user.
"""

from __future__ import annotations

import json
import os
from typing import Any

__all__ = ["MAX_JSON_BYTES", "read_json", "unique_keys"]

# Configs, indexes and metadata records are kilobytes (the 7B's index is 50 KB); a file
# larger than this is not one of them, and reading it whole could exhaust the memory.
MAX_JSON_BYTES = 64 << 20


def unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    """A JSON object's pairs as a dict (``json.loads``'s ``object_pairs_hook``), refusing a
    repeated key: JSON would keep the last one silently, hiding the first entry."""
    out = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"the key {key[:80]!r} appears twice")
        out[key] = value
    return out


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def read_json(path: str | os.PathLike, error: type[Exception], fix: str) -> Any:
    """The parsed content of the JSON file ``path``.

    Args:
        path: the file.
        error: the exception class raised for any problem (e.g. ``PretrainedError``).
        fix: what the user should do, appended to the message ("download it again").

    Raises:
        error: the file cannot be read, is larger than ``MAX_JSON_BYTES``, or is not
            UTF-8 JSON of the strict kind (no duplicate keys, no NaN or Infinity).
    """
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_JSON_BYTES + 1)
    except OSError as err:
        raise error(f"{path} cannot be read ({err.strerror or err}); {fix}.") from None
    if len(raw) > MAX_JSON_BYTES:
        raise error(
            f"{path} is larger than {MAX_JSON_BYTES >> 20} MiB, too large for the JSON "
            f"record it should be; {fix}."
        )
    try:
        return json.loads(
            raw.decode("utf-8"), object_pairs_hook=unique_keys, parse_constant=_no_constant
        )
    except UnicodeDecodeError as err:
        why = f"not UTF-8 text: byte {err.start + 1} is {raw[err.start : err.start + 1]!r}"
    except RecursionError:
        why = "not valid JSON: nested too deeply"
    except ValueError as err:  # JSONDecodeError, a duplicate key, NaN, a huge integer
        why = f"not valid JSON: {str(err)[:200]}"
    raise error(f"{path} cannot be read ({why}); {fix}.")
