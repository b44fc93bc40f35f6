"""``model.scan_layers``: the blocks run as one ``lax.scan`` give what the unscanned loop
gives (outputs, final states, gradients, a decode step, document resets), with the same
parameter tree, so checkpoints load either way; the configs refuse what cannot scan."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import TOL, mixed_config, tokens, with_weights_of

from train.config import named
from train.config.overrides import apply_overrides, from_dict, to_dict
from xlstm_jax import ConfigError, xLSTMLargeConfig
from xlstm_jax.registry import family_of

LARGE = xLSTMLargeConfig(embedding_dim=32, num_heads=2, num_blocks=2, vocab_size=50, chunk_size=8)
# A homogeneous v1 stack: mLSTM blocks only (conv state included).
V1 = mixed_config(slstm_at=(), slstm_block=None, num_blocks=2)
ATOL, RTOL = TOL["float32"]


def _random_model(cfg):
    """The model of ``cfg`` with N(0, 0.3^2) weights drawn by NumPy: built abstractly, so
    no initialisation is compiled (parity needs the same weights, not trained ones)."""
    abstract = nnx.eval_shape(lambda: family_of(cfg).model(cfg, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    rng = np.random.default_rng(0)
    state = jax.tree.map(lambda a: jnp.asarray(0.3 * rng.standard_normal(a.shape), a.dtype), state)
    return nnx.merge(graphdef, state)


@functools.partial(nnx.jit, static_argnames="with_grads")
def _everything(model, x, doc_starts, with_grads):
    """In one program (one compile per model): the logits and state of a prefill and of one
    decode step after it (as generation runs), and with ``with_grads`` the gradients from
    the zero state through packed documents."""
    prefill = model.with_state(x[:, :-1], model.init_state(x.shape[0]))
    step = model.with_state(x[:, -1:], prefill[1])
    if not with_grads:
        return prefill, step
    return prefill, step, nnx.grad(lambda m: jnp.mean(m(x, doc_starts) ** 2))(model)


# The gradients for one family only (the scan is the same code for both; v1 adds the conv
# state, which the decode step covers): the CI budget.
@pytest.mark.parametrize("cfg, with_grads", [(LARGE, True), (V1, False)], ids=["large", "v1"])
def test_scan_matches_the_loop(cfg, with_grads):
    loop = _random_model(cfg)
    # With remat keeping the matmuls: the policy changes what is saved, not the values.
    scan_cfg = dataclasses.replace(cfg, scan_layers=True, remat=True, remat_policy="dots_saveable")
    scan = with_weights_of(loop, scan_cfg)
    # The parameter tree does not change: a checkpoint of either loads into the other.
    assert jax.tree.structure(nnx.state(scan)) == jax.tree.structure(nnx.state(loop))
    x = tokens(2, 8, cfg.vocab_size)
    doc_starts = jnp.zeros(x.shape, bool).at[:, [0, 5]].set(True)
    want = _everything(loop, x, doc_starts, with_grads)
    got = _everything(scan, x, doc_starts, with_grads)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=ATOL, rtol=RTOL), got, want)


@pytest.mark.one_jax
def test_configs_refuse_what_cannot_scan():
    with pytest.raises(ConfigError, match=r"scan_layers needs identical blocks.*slstm_at"):
        mixed_config(scan_layers=True)
    with pytest.raises(ConfigError, match="scan_layers.*dropout"):
        dataclasses.replace(V1, scan_layers=True, dropout=0.1)
    with pytest.raises(ConfigError, match="remat_policy must be one of"):
        dataclasses.replace(LARGE, remat_policy="everything")


@pytest.mark.one_jax
def test_knobs_round_trip_through_overrides():
    cfg = apply_overrides(
        named.load("xlstm_large_tiny"),
        ["model.scan_layers=true", "model.remat_policy=dots_saveable"],
    )
    assert (cfg.model.scan_layers, cfg.model.remat_policy) == (True, "dots_saveable")
    assert from_dict(type(cfg), to_dict(cfg)) == cfg
