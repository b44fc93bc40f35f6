"""The mLSTM cell as every family's layer runs it: its settings and their checks (one copy
for the paper model's ``mLSTMLayerConfig`` and ``xLSTMLargeConfig``), the choice of form,
the document reset of the forget gate, and the sharded call into ``pallas_kernels``.

Shape legend: B batch, S sequence, NH heads, DHQK / DHV head dims of q, k / v.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

import pallas_kernels as pk
from xlstm_jax.layers.config import IMPLS, is_pow2, require
from xlstm_jax.layers.sharding import shard_op
from xlstm_jax.layers.state import MLSTMState

__all__ = [
    "KERNEL_IMPLS",
    "MLSTM_FORMS",
    "RESET_FGATE_PREACT",
    "cell_form",
    "check_cell_settings",
    "mlstm_cell",
    "reset_forget_gate",
]

MLSTM_FORMS = ("auto", "parallel", "chunkwise", "recurrent")
# The implementations that run the chunkwise form on a GPU kernel.
KERNEL_IMPLS = ("pallas", "mosaic")
# The chunk sizes the Mosaic kernel takes (its 64-row wgmma tile).
_MOSAIC_CHUNKS = (64, 128)


def check_cell_settings(owner: str, *, form: str, chunk_size: int, impl: str) -> None:
    """Checks a layer's cell knobs (``owner`` names the config in the message).

    ``form`` one of ``MLSTM_FORMS``; ``chunk_size`` >= 1; ``impl`` one of ``IMPLS``. The
    kernels run only the chunkwise form: ``impl="pallas"`` needs a power-of-two chunk of at
    least 16, ``impl="mosaic"`` a chunk of 64 or 128, and neither takes ``form="parallel"``
    or ``"recurrent"``.

    Raises:
      ConfigError: naming the field and the fix.
    """
    require(form in MLSTM_FORMS, f"{owner}.form must be one of {MLSTM_FORMS}; got {form!r}.")
    require(chunk_size >= 1, f"{owner}.chunk_size must be >= 1; got {chunk_size}.")
    require(impl in IMPLS, f"{owner}.impl must be one of {IMPLS}; got {impl!r}.")
    if impl in KERNEL_IMPLS:
        require(
            form in ("auto", "chunkwise"),
            f"{owner}.impl={impl!r} runs the chunkwise kernel, but form={form!r} has none; "
            "set form='chunkwise' (or 'auto'), or impl='xla' / 'auto'.",
        )
    if impl == "pallas":
        require(
            chunk_size >= 16 and is_pow2(chunk_size),
            f"{owner}.impl='pallas' needs chunk_size to be a power of two >= 16 (got "
            f"{chunk_size}); set chunk_size=64, or impl='xla'.",
        )
    if impl == "mosaic":
        require(
            chunk_size in _MOSAIC_CHUNKS,
            f"{owner}.impl='mosaic' needs chunk_size 64 or 128 (got {chunk_size}); set "
            "chunk_size=64, or impl='pallas' / 'xla'.",
        )


# Logical axes of the cell's operands: heads and batch are independent.
_SEQ, _GATE = ("batch", "heads", None, None), ("batch", "heads", None)
_STATE = (_SEQ, _GATE, ("batch", "heads"))


# The forget-gate pre-activation forced at a document's first token: log sigmoid(-60) = -60,
# so the carried state is scaled by e^-60 (~1e-26), below float32 (and float64) rounding
# next to any new input (gates are soft-capped or bounded well inside +-60). A finite value
# keeps the chunkwise cumulative gate sums free of inf - inf.
RESET_FGATE_PREACT = -60.0


def reset_forget_gate(f: jax.Array, doc_starts: jax.Array | None) -> jax.Array:
    """``f`` (B, NH, S) with the gate closed where ``doc_starts`` (B, S) bool is set: no state
    crosses into a new document (packed training). None: ``f`` unchanged."""
    if doc_starts is None:
        return f
    return jnp.where(doc_starts[:, None, :], jnp.asarray(RESET_FGATE_PREACT, f.dtype), f)


def cell_form(form: str, chunk_size: int, impl: str, S: int, has_state: bool) -> str:
    """Which op runs the cell for S tokens: "step", "parallel", "chunkwise" or "recurrent",
    given a layer's ``form`` knob ("auto" or one of those), ``chunk_size`` and ``impl``."""
    if has_state and S == 1:
        return "step"  # decoding: one fused step (every form computes the same there)
    if form != "auto":
        return form
    return "parallel" if chunk_size >= S and impl not in KERNEL_IMPLS else "chunkwise"


def mlstm_cell(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    i: jax.Array,
    f: jax.Array,
    state: MLSTMState | None,
    *,
    form: str,
    chunk_size: int,
    impl: str,
    eps: float = 1e-6,
) -> tuple[jax.Array, MLSTMState]:
    """The mLSTM cell of every layer that has one, sharded over batch and heads.

    q, k (B, NH, S, DHQK), v (B, NH, S, DHV), i, f (B, NH, S) float32 gate pre-activations
    and the state (None: zeros) -> (h (B, NH, S, DHV), the state after the last step).
    ``form``/``chunk_size``/``impl`` are the layer's knobs (see ``cell_form``).
    """
    S = q.shape[2]
    form = cell_form(form, chunk_size, impl, S, state is not None)
    # The step and the recurrent form have no Mosaic kernel: a layer that asks for the Mosaic
    # chunkwise kernel runs them with "auto" (the Triton kernel where it passes its check).
    step_impl = "auto" if impl == "mosaic" else impl

    def cell(q, k, v, i, f, *state):
        state = MLSTMState(*state) if state else None
        if form == "step":
            h, new = pk.mlstm_step(
                q[:, :, 0],
                k[:, :, 0],
                v[:, :, 0],
                i[..., 0],
                f[..., 0],
                state,
                eps=eps,
                impl=step_impl,
            )
            return h[:, :, None], tuple(new)
        if form == "recurrent":
            h, last = pk.mlstm_recurrent(
                q, k, v, i, f, initial_state=state, return_last_state=True, eps=eps, impl=step_impl
            )
            return h, tuple(last)
        # The parallel form with a carried state is one chunk of the chunkwise form (on
        # XLA, the parallel form's only implementation).
        L, cimpl = (S, "xla") if form == "parallel" else (chunk_size, impl)
        h, last = pk.mlstm_chunkwise(
            q,
            k,
            v,
            i,
            f,
            chunk_size=L,
            initial_state=state,
            return_last_state=True,
            eps=eps,
            impl=cimpl,
        )
        if form == "parallel" and state is None:
            # From a zero state, the outputs are the reference's stabilised parallel form;
            # the final state above continues them (dead code under jit when unused).
            h = pk.mlstm_parallel(q, k, v, i, f, eps=eps, impl=impl)
        return h, tuple(last)

    args = (q, k, v, i, f) + (tuple(state) if state is not None else ())
    in_axes = (_SEQ, _SEQ, _SEQ, _GATE, _GATE) + (_STATE if state is not None else ())
    h, last = shard_op(cell, args, in_axes, (_SEQ, _STATE))
    return h, MLSTMState(*last)
