"""The jitted train step, its loss, and the pre-run memory estimate.

Shapes: a accumulation steps, m micro-batch, s sequence length, V vocabulary.

The train state is a plain pytree ``{"params", "opt_state"}`` (fp32 master weights; the
model computes in ``model.dtype``). One step, with the state donated, takes a ``Batch``
``(a, m, s + 1)``, accumulates the gradients of ``a`` micro-batches, clips, and applies
masked AdamW.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from train.batch import Batch
from train.config import ExperimentConfig
from train.objective import mean_loss
from xlstm_jax.registry import family_of
from xlstm_jax.sharding import DEFAULT_RULES, param_shardings

__all__ = [
    "estimate_memory",
    "fmt_bytes",
    "fmt_count",
    "make_loss_fn",
    "make_train_step",
    "state_shardings",
]


def fmt_bytes(n: float) -> str:
    if n < 1024:
        return f"{int(n)} B"
    for unit in ("KB", "MB", "GB"):
        n /= 1024
        if n < 1024:
            return f"{n:.1f} {unit}"
    return f"{n / 1024:.1f} TB"


def fmt_count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e5 else f"{n:,}"


def estimate_memory(cfg: ExperimentConfig, num_params: int) -> dict[str, int]:
    """Rough bytes per device for one train step (no sharding yet).

    Parameters, gradients (two buffers with accumulation) and AdamW moments are exact for
    the master weights; "updates" counts the optimizer's update buffer plus the weights'
    copy in the compute dtype (bf16 runs). The activation term is an estimate of what the
    backward pass keeps per micro-batch: about a dozen (B, S, inner) tensors per block
    (projections, conv, gates, cell output) in the compute dtype, the mLSTM's chunk-local
    (S x chunk) gate matrices in fp32, and the fp32 logits with their softmax and
    gradient. With ``model.remat`` only each block's input stays, plus one block's worth
    during its recomputation. The compiled step's own figure is printed after compiling.
    """
    m = cfg.model
    p_bytes = jnp.dtype(m.param_dtype).itemsize
    c_bytes = jnp.dtype(m.dtype).itemsize
    act = family_of(m).activation_bytes(m, cfg.train.micro, cfg.data.seq_len, c_bytes)
    if m.remat:  # each block's input stays, plus one block's worth while it is recomputed
        blocks = len(act.per_block) * act.block_input + max(act.per_block)
    else:
        blocks = sum(act.per_block)
    out = {
        "params": num_params * p_bytes,
        "grads": num_params * p_bytes * (2 if cfg.train.accum_steps > 1 else 1),
        "optimizer": 2 * num_params * p_bytes,
        "updates": num_params * (p_bytes + (c_bytes if m.dtype != m.param_dtype else 0)),
        "activations": blocks + act.head,
    }
    out["total"] = sum(out.values())
    return out


def make_loss_fn(
    graphdef, rest, max_scored: int | None = None, reset_id: int | None = None
) -> Callable:
    """``loss(params, batch) -> scalar``: the mean cross-entropy over the batch's scored
    tokens (``train.objective.mean_loss``) of the model ``nnx.merge(graphdef, params,
    rest)``."""

    def loss(params, batch: Batch):
        return mean_loss(nnx.merge(graphdef, params, rest), batch, max_scored, reset_id)

    return loss


def make_train_step(
    graphdef,
    rest,
    tx: optax.GradientTransformation,
    max_scored: int | None = None,
    reset_id: int | None = None,
    objective: Callable | None = None,
) -> Callable:
    """``step(state, batch) -> (state, {"loss", "grad_norm"})`` with a batch whose leaves
    lead with (a, m): a ``Batch`` (a, m, s + 1) for the LMs.

    The loss is the mean over the ``a`` micro-batches of ``objective(model, micro_batch)``
    (default: the mean next-token cross-entropy over the scored tokens); gradients are
    accumulated in fp32. ``max_scored``: see ``train.objective.scored_predictions`` (None:
    every position goes through the LM head). ``reset_id``: see ``train.objective``.
    ``objective``: a data source's loss (``train.sources``), which replaces the default.
    """
    if objective is None:
        grad_fn = jax.value_and_grad(make_loss_fn(graphdef, rest, max_scored, reset_id))
    else:
        grad_fn = jax.value_and_grad(lambda p, b: objective(nnx.merge(graphdef, p, rest), b))

    def step(state, batch):
        params = state["params"]
        accum = jax.tree.leaves(batch)[0].shape[0]
        if accum == 1:
            loss, grads = grad_fn(params, jax.tree.map(lambda x: x[0], batch))
        else:

            def micro(carry, micro_batch):
                loss_sum, grad_sum = carry
                loss, grads = grad_fn(params, micro_batch)
                return (loss_sum + loss, jax.tree.map(jnp.add, grad_sum, grads)), None

            zeros = jax.tree.map(jnp.zeros_like, params)
            (loss, grads), _ = jax.lax.scan(micro, (jnp.zeros((), jnp.float32), zeros), batch)
            loss = loss / accum
            grads = jax.tree.map(lambda g: g / accum, grads)
        updates, opt_state = tx.update(grads, state["opt_state"], params)
        new_state = {"params": optax.apply_updates(params, updates), "opt_state": opt_state}
        grad_norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads)))
        return new_state, {"loss": loss, "grad_norm": grad_norm}

    return step


def state_shardings(
    tx, params_state: nnx.State, opt_state, mesh: Mesh, rules=DEFAULT_RULES
) -> dict:
    """Shardings of the train state: parameters by their logical axes, the optimizer's
    parameter-shaped leaves (AdamW moments) like their parameters, the rest replicated."""
    params = param_shardings(params_state, mesh, rules)
    replicated = NamedSharding(mesh, PartitionSpec())
    opt = optax.tree_map_params(
        tx,
        lambda _, sharding: sharding,
        opt_state,
        params,
        transform_non_params=lambda _: replicated,
    )
    return {"params": params, "opt_state": opt}
