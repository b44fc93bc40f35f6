"""Orbax checkpoints of the train state plus a JSON record of where the run stands.

Each checkpoint (``WORKDIR/checkpoints/STEP``) holds three items: ``params``, ``opt_state``
and ``meta`` (step, data position, the model config it was written for, and a checksum of
every array), so a reader that needs only the weights (sampling, fine-tuning) restores
``params`` alone.

What is saved and restored is checked:

* Before a save, every parameter and optimizer array must be finite; otherwise the save is
  refused (``NonFiniteStateError``) and the previous checkpoint stays the newest.
* The checksum of each array (its bits, position-weighted, summed modulo 2**32: exact
  integer arithmetic, so the same on any mesh) is stored in ``meta`` and compared after a
  restore, so flipped bytes in a data file are found, not trained on.
* ``restore_latest`` compares the model config first (a changed architecture fails with
  the differing keys), then tries the checkpoints newest first: one that cannot be read or
  fails its checksums is reported and the next older one is used. Nothing is ever deleted:
  checkpoints that must leave the way (corrupt ones when training resumes past them) are
  moved to ``WORKDIR/set_aside/``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from train.config.overrides import config_diff, with_defaults
from train.errors import RunError, disk_error

__all__ = [
    "CheckpointError",
    "Checkpointer",
    "NonFiniteStateError",
    "SET_ASIDE",
    "check_resume_step",
    "state_report",
]

SET_ASIDE = "set_aside"


class CheckpointError(RunError):
    """A checkpoint that cannot be restored or saved; nothing was deleted."""


class _ModelMismatchError(CheckpointError):
    """The checkpoint was written for another model (falling back would not help)."""


class NonFiniteStateError(RunError):
    """The train state holds NaN or inf values; it was not saved."""


def check_resume_step(directory: Path, step: int) -> None:
    """``ConfigError`` unless ``directory`` (a run's ``checkpoints/``) holds checkpoint
    ``step``: checked before a run writes anything, so a mistyped ``--resume-step`` exits 2
    with the steps there are."""
    from xlstm_jax.layers.config import ConfigError

    directory = Path(directory).absolute()
    if not directory.is_dir():
        raise ConfigError(
            f"--resume-step {step}: there is no checkpoint in {directory}, so step {step} "
            f"cannot be resumed; leave out --resume-step to start afresh."
        )
    ckpt = Checkpointer(directory, keep=1, async_save=False, create=False)
    try:
        steps = ckpt.all_steps()
    finally:
        ckpt.close()
    if step not in steps:
        there = (
            f"the checkpoints are at steps {', '.join(map(str, steps))}; give one of them, or "
            "leave out --resume-step for the newest"
            if steps
            else "it holds no checkpoint yet; leave out --resume-step to start afresh"
        )
        raise ConfigError(
            f"--resume-step {step}: there is no checkpoint {step} in {directory}; {there}."
        )


def _bits(x: jax.Array) -> jax.Array:
    """The raw bits of ``x`` as uint32, in its own shape (8-byte values: a trailing axis of
    their two 32-bit words). No reshape, so a sharded ``x`` stays in its shards."""
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    size = x.dtype.itemsize
    if size == 8:
        return jax.lax.bitcast_convert_type(x, jnp.uint32)
    unsigned = {4: jnp.uint32, 2: jnp.uint16, 1: jnp.uint8}[size]
    return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)


def _flat_index(shape: tuple[int, ...]) -> jax.Array:
    """uint32 (shape): each element's row-major position (mod 2**32), from one iota per axis
    (an ``arange`` of the flattened array would gather a sharded one on every device)."""
    index = jnp.zeros(shape, jnp.uint32)
    stride = 1
    for axis in reversed(range(len(shape))):
        iota = jax.lax.broadcasted_iota(jnp.uint32, shape, axis)
        index = index + iota * jnp.uint32(stride % 2**32)
        stride *= shape[axis]
    return index


def _report_leaf(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(checksum uint32, all finite bool) of one array."""
    u = _bits(x)
    # Odd, position-dependent weights: a swapped, shifted or flipped value changes the sum.
    w = _flat_index(u.shape) * jnp.uint32(2654435761) + jnp.uint32(1)
    checksum = jnp.sum(u * w, dtype=jnp.uint32)
    finite = jnp.all(jnp.isfinite(x)) if jnp.issubdtype(x.dtype, jnp.inexact) else True
    return checksum, jnp.asarray(finite)


@jax.jit
def _report(tree):
    """Per leaf: (checksum uint32, all finite bool)."""
    return jax.tree.map(_report_leaf, tree)


def state_report(tree: Any) -> tuple[dict[str, int], list[str]]:
    """``(checksums, non_finite)`` of a pytree of arrays: the checksum of every leaf by its
    path (``jax.tree_util.keystr``), and the paths of leaves holding NaN or inf."""
    leaves = jax.tree_util.tree_leaves_with_path(jax.device_get(_report(tree)), is_leaf=_pair)
    sums = {jax.tree_util.keystr(path): int(pair[0]) for path, pair in leaves}
    bad = [jax.tree_util.keystr(path) for path, pair in leaves if not bool(pair[1])]
    return sums, bad


def _pair(x) -> bool:
    return isinstance(x, tuple) and len(x) == 2 and all(isinstance(v, np.ndarray) for v in x)


class Checkpointer:
    """Keeps the last ``keep`` checkpoints (saving asynchronously if asked)."""

    def __init__(self, directory: Path, keep: int, async_save: bool, *, create: bool = True):
        self.directory = Path(directory).absolute()
        self._pending: int | None = None  # the step of an async save not yet confirmed
        self._mngr = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep,
                enable_async_checkpointing=async_save,
                create=create,
            ),
        )

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None."""
        return self._mngr.latest_step()

    def all_steps(self) -> list[int]:
        """The steps of all complete checkpoints, oldest first."""
        return sorted(self._mngr.all_steps())

    def save(self, step: int, state: dict, meta: dict) -> None:
        """Saves the train state ``{"params", "opt_state"}`` and ``meta`` (plus the arrays'
        checksums) as checkpoint ``step`` (returns once the arrays are copied off the
        device when saving asynchronously).

        Raises:
            NonFiniteStateError: an array holds NaN or inf (nothing is written).
            CheckpointError: the disk refused (full, read-only); earlier checkpoints stay.
        """
        checksums, bad = {}, []
        for name in ("params", "opt_state"):
            sums, nonfinite = state_report(state[name])
            checksums[name] = sums
            bad += [f"{name}{p}" for p in nonfinite]
        if bad:
            raise NonFiniteStateError(
                f"after step {step} {len(bad)} arrays hold NaN or inf (first: {bad[0]}); "
                f"checkpoint {step} was not saved. {self._keeps()} Lower optimizer.lr, raise "
                f"schedule.warmup_steps or set optimizer.grad_clip, then rerun (it resumes "
                f"from that checkpoint)."
            )
        self.wait()  # an earlier async save that failed is reported as itself
        try:
            self._pending = step
            self._mngr.save(
                step,
                args=ocp.args.Composite(
                    params=ocp.args.StandardSave(state["params"]),
                    opt_state=ocp.args.StandardSave(state["opt_state"]),
                    meta=ocp.args.JsonSave({**meta, "checksums": checksums}),
                ),
                force=True,
            )
        except Exception as e:  # noqa: BLE001 - a filesystem failure becomes one message
            raise self._save_error(e, step) from e

    def _keeps(self) -> str:
        last = self.latest_step()
        if last is None:
            return "There is no earlier checkpoint."
        return f"The last good checkpoint ({self.directory / str(last)}) is kept."

    def _save_error(self, e: Exception, step: int | None) -> Exception:
        what = f"saving checkpoint {step}" if step is not None else "saving a checkpoint"
        keeps = self._keeps().rstrip(".")
        wrapped = disk_error(e, f"{what} in {self.directory}", keeps[0].lower() + keeps[1:])
        return wrapped if wrapped is not None else e

    def restore_latest(
        self,
        abstract: dict,
        model_config: dict,
        say: Callable[[str], None],
        *,
        step: int | None = None,
        set_aside_newer: bool = False,
    ) -> tuple[int, dict, dict] | None:
        """Restores the newest checkpoint that reads back intact, into the structure of
        ``abstract`` (``{"params", "opt_state"}``, or ``{"params"}`` alone).

        Args:
            abstract: the items to restore, as trees of ``jax.ShapeDtypeStruct``.
            model_config: this run's model config (compared with the checkpoint's).
            say: where the notes on skipped checkpoints go.
            step: restore exactly this step (no fallback) instead of the newest good one.
            set_aside_newer: move checkpoints newer than the one restored (corrupt ones, or
                all newer ones when ``step`` is given) to ``WORKDIR/set_aside/``, so that a
                training run can save past them. Readers leave them in place.

        Returns:
            ``(step, state, meta)``, or None when there is no checkpoint.

        Raises:
            CheckpointError: a different model, ``step`` missing or unreadable, or no
                checkpoint readable; nothing is deleted or moved then.
        """
        steps = self.all_steps()
        if not steps:
            if step is not None:
                raise CheckpointError(
                    f"there is no checkpoint in {self.directory}, so step {step} cannot be "
                    f"resumed; leave out the step to start afresh."
                )
            return None
        if step is not None:
            if step not in steps:
                raise CheckpointError(
                    f"there is no checkpoint {step} in {self.directory}; the checkpoints are "
                    f"at steps {', '.join(map(str, steps))}."
                )
            candidates = [step]
        else:
            candidates = steps[::-1]
        failures: list[str] = []
        for s in candidates:
            try:
                state, meta = self._restore(s, abstract, model_config)
            except _ModelMismatchError:
                raise
            except CheckpointError as e:
                failures.append(str(e))
                if s != candidates[-1]:
                    say(f"warning: {e}; trying the checkpoint before it.")
                continue
            newer = [n for n in steps if n > s]
            if newer and set_aside_newer:
                for n in newer:
                    reason = "newer" if step is not None else "corrupt"
                    dest = self.set_aside(n, reason)
                    say(f"moved checkpoint {n} to {dest} (nothing is deleted).")
            return s, state, meta
        raise CheckpointError(
            "no checkpoint in "
            f"{self.directory} can be restored:\n  "
            + "\n  ".join(failures)
            + f"\nNothing was deleted. To start afresh use another --workdir, or move "
            f"{self.directory} away; to resume, rerun with the config that wrote it."
        )

    def set_aside(self, step: int, reason: str) -> Path:
        """Moves checkpoint ``step`` to ``WORKDIR/set_aside/STEP-REASON`` (never deletes);
        returns the new path."""
        self.wait()
        base = self.directory.parent / SET_ASIDE
        base.mkdir(exist_ok=True)
        dest = base / f"{step}-{reason}"
        n = 1
        while dest.exists():
            n += 1
            dest = base / f"{step}-{reason}-{n}"
        shutil.move(str(self.directory / str(step)), dest)
        self._mngr.reload()
        return dest

    def _restore(self, step: int, abstract: dict, model_config: dict) -> tuple[dict, dict]:
        where = self.directory / str(step)
        try:
            meta = self._mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))[
                "meta"
            ]
            if not isinstance(meta, dict):
                raise ValueError("its meta item is not a JSON object")
        except Exception as e:  # noqa: BLE001 - any Orbax/IO failure means "unreadable"
            raise CheckpointError(f"checkpoint {where} is unreadable ({_short(e)})") from e
        record = meta.get("model_config", {})
        if isinstance(record, dict):  # keys added since the checkpoint: their defaults
            record = with_defaults(record, model_config)
        diff = config_diff({"model": record}, {"model": model_config})
        if diff:
            raise _ModelMismatchError(
                f"checkpoint {where} was written for a different model:\n  "
                + "\n  ".join(diff)
                + "\nNothing was deleted. To start afresh use another --workdir, or move "
                f"{self.directory} away; to resume, rerun with the config that wrote it."
            )
        items = {name: ocp.args.StandardRestore(tree) for name, tree in abstract.items()}
        try:
            restored = self._mngr.restore(step, args=ocp.args.Composite(**items))
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(
                f"checkpoint {where} could not be restored into this run's train state "
                f"(corrupt or truncated files, or a different optimizer setup: {_short(e)})"
            ) from e
        state = {name: restored[name] for name in abstract}
        expected = meta.get("checksums")
        if expected is not None:  # checkpoints written before checksums are taken as they are
            if not (
                isinstance(expected, dict)
                and all(isinstance(expected.get(name), dict) for name in state)
            ):
                raise CheckpointError(
                    f"checkpoint {where} is corrupt: the checksums of its meta item are not "
                    f"a mapping of each item's arrays"
                )
            for name, tree in state.items():
                got, _ = state_report(tree)
                wrong = [k for k, v in got.items() if expected[name].get(k) != v]
                if wrong:
                    raise CheckpointError(
                        f"checkpoint {where} is corrupt: {len(wrong)} arrays of {name} do not "
                        f"match their checksums (first: {name}{wrong[0]})"
                    )
        return state, meta

    def wait(self) -> None:
        """Blocks until pending async saves are on disk.

        Raises:
            CheckpointError: the disk refused a pending save.
        """
        try:
            self._mngr.wait_until_finished()
        except Exception as e:  # noqa: BLE001
            raise self._save_error(e, self._pending) from e
        self._pending = None

    def close(self) -> None:
        """Finishes pending saves and releases Orbax's threads."""
        try:
            self.wait()
        finally:
            self._mngr.close()


def _short(e: BaseException, limit: int = 300) -> str:
    """The first line of an (often very long) Orbax/tensorstore error, shortened."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
