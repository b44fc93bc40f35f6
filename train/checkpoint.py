"""Orbax checkpoints of the train state plus a JSON record of where the run stands.

Each checkpoint (``WORKDIR/checkpoints/STEP``) holds three items: ``params``, ``opt_state``
and ``meta`` (step, data position, the model config it was written for), so a reader that
needs only the weights (sampling, fine-tuning) restores ``params`` alone. Restoring compares
the model config first, so a changed architecture fails with the differing keys instead of
a shape error deep in Orbax; any failure raises ``CheckpointError`` and deletes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp

from train.overrides import config_diff

__all__ = ["CheckpointError", "Checkpointer"]


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be restored; nothing was deleted."""


class Checkpointer:
    """Keeps the last ``keep`` checkpoints (saving asynchronously if asked)."""

    def __init__(self, directory: Path, keep: int, async_save: bool):
        self.directory = Path(directory).absolute()
        self._mngr = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep,
                enable_async_checkpointing=async_save,
                create=True,
            ),
        )

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None."""
        return self._mngr.latest_step()

    def save(self, step: int, state: dict, meta: dict) -> None:
        """Saves the train state ``{"params", "opt_state"}`` and ``meta`` as checkpoint
        ``step`` (returns once the arrays are copied off the device when saving
        asynchronously)."""
        self._mngr.save(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(state["params"]),
                opt_state=ocp.args.StandardSave(state["opt_state"]),
                meta=ocp.args.JsonSave(meta),
            ),
            force=True,
        )

    def restore(self, step: int, abstract_state: dict, model_config: dict) -> tuple[dict, dict]:
        """Restores checkpoint ``step`` into the structure of ``abstract_state``
        (``{"params", "opt_state"}``); returns ``(state, meta)``.

        Raises:
            CheckpointError: unreadable, corrupt, or written for a different model or
                optimizer; the message names the folder and the fixes.
        """
        return self._restore(step, abstract_state, model_config)

    def restore_params(
        self, step: int, abstract_params: Any, model_config: dict
    ) -> tuple[Any, dict]:
        """Restores only the parameters of checkpoint ``step`` (no optimizer state is read);
        returns ``(params, meta)``. Raises ``CheckpointError`` as ``restore``."""
        state, meta = self._restore(step, {"params": abstract_params}, model_config)
        return state["params"], meta

    def _restore(self, step: int, abstract: dict, model_config: dict) -> tuple[dict, dict]:
        where = self.directory / str(step)
        fixes = (
            f"Nothing was deleted. To start afresh use another --workdir, or move "
            f"{self.directory} away; to resume, rerun with the config that wrote it."
        )
        try:
            meta = self._mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))[
                "meta"
            ]
        except Exception as e:  # noqa: BLE001 - any Orbax/IO failure means "unreadable"
            raise CheckpointError(f"checkpoint {where} is unreadable ({e}). {fixes}") from e
        diff = config_diff({"model": meta.get("model_config", {})}, {"model": model_config})
        if diff:
            raise CheckpointError(
                f"checkpoint {where} was written for a different model:\n  "
                + "\n  ".join(diff)
                + f"\n{fixes}"
            )
        items = {name: ocp.args.StandardRestore(tree) for name, tree in abstract.items()}
        try:
            restored = self._mngr.restore(step, args=ocp.args.Composite(**items))
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(
                f"checkpoint {where} could not be restored into this run's train state "
                f"(corrupt, or a different optimizer setup): {e}. {fixes}"
            ) from e
        return {name: restored[name] for name in abstract}, meta

    def wait(self) -> None:
        """Blocks until pending async saves are on disk."""
        self._mngr.wait_until_finished()

    def close(self) -> None:
        """Finishes pending saves and releases Orbax's threads."""
        self._mngr.wait_until_finished()
        self._mngr.close()
