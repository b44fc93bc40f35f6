"""The train step (to be jitted) and the shardings of the train state.

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

from train.data.objective import make_loss_fn
from xlstm_jax.layers.sharding import DEFAULT_RULES, param_shardings

__all__ = ["make_train_step", "state_shardings"]


def make_train_step(
    graphdef, rest, tx: optax.GradientTransformation, objective: Callable | None = None
) -> Callable:
    """``step(state, batch) -> (state, {"loss", "grad_norm"})`` with a batch whose leaves
    lead with (a, m): a ``Batch`` (a, m, s + 1) for the LMs.

    The loss is the mean over the ``a`` micro-batches of ``objective(model, micro_batch)``
    (default: the mean next-token cross-entropy over every scored token,
    ``train.data.objective.mean_loss``); gradients are accumulated in fp32. ``objective``:
    a data source's loss (``train.data.sources``), which replaces the default.
    """
    if objective is None:
        grad_fn = jax.value_and_grad(make_loss_fn(graphdef, rest))
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
