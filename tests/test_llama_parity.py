"""Parity of the Transformer baseline (``TransformerLM``) with transformers'
``LlamaForCausalLM`` on the same weights: float32 logits, and the gradient of a
cross-entropy loss with respect to every parameter, with the LM head tied and untied.

The Llama config is built here (nothing is downloaded). Every weight is redrawn, the norm
scales included, so a norm computed as ``(1 + w) x`` rather than ``w x`` would show.
Non-default ``rope_theta`` and ``rms_norm_eps`` catch a value that is not passed through.
Measured (2026-12-07, CPU): max |difference| 4.7e-6 on logits up to 5, 1.1e-6 on gradients
up to 0.7; interleaved rotary pairs or an RMSNorm eps left at its default miss by 5 and
2e-3 on the logits.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import TOL, require_reference, require_transformers

from xlstm_jax.models.transformer.config import TransformerConfig
from xlstm_jax.models.transformer.model import TransformerLM

pytestmark = pytest.mark.reference
torch, _ = require_reference(module_level=True)
transformers = require_transformers(module_level=True)

B, S = 2, 11
CFG = dict(
    vocab_size=97,
    embedding_dim=64,
    num_blocks=2,
    num_heads=4,
    rope_theta=500.0,
    norm_eps=1e-5,
    dtype="float32",
    param_dtype="float32",
)


def llama_names(cfg: TransformerConfig) -> list[tuple[str, tuple[str, ...], bool]]:
    """Our parameter paths against Llama's state-dict names: ``(path, names, linear)``.

    A linear's torch weight is (out, in) where our kernel is (in, out); a fused kernel of
    ours is its torch weights' transposes side by side, in the order listed (``qkv``:
    q | k | v, heads in order within each; ``gate_up``: gate | up).
    """
    rows = [("token_embedding.embedding", ("model.embed_tokens.weight",), False)]
    for i in range(cfg.num_blocks):
        ours, hf = f"blocks.{i}", f"model.layers.{i}"
        rows += [
            (f"{ours}.attn_norm.scale", (f"{hf}.input_layernorm.weight",), False),
            (f"{ours}.qkv.kernel", tuple(f"{hf}.self_attn.{p}_proj.weight" for p in "qkv"), True),
            (f"{ours}.attn_out.kernel", (f"{hf}.self_attn.o_proj.weight",), True),
            (f"{ours}.ffn_norm.scale", (f"{hf}.post_attention_layernorm.weight",), False),
            (
                f"{ours}.gate_up.kernel",
                (f"{hf}.mlp.gate_proj.weight", f"{hf}.mlp.up_proj.weight"),
                True,
            ),
            (f"{ours}.ffn_down.kernel", (f"{hf}.mlp.down_proj.weight",), True),
        ]
    rows.append(("final_norm.scale", ("model.norm.weight",), False))
    if not cfg.tie_weights:
        rows.append(("lm_head.kernel", ("lm_head.weight",), True))
    return rows


def to_llama(cfg: TransformerConfig, ours: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Our arrays by path -> Llama's state dict (numpy)."""
    out = {}
    for path, names, linear in llama_names(cfg):
        parts = np.split(ours[path], len(names), axis=-1) if linear else [ours[path]]
        out.update({n: p.T if linear else p for n, p in zip(names, parts, strict=True)})
    return out


def from_llama(cfg: TransformerConfig, theirs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Llama's arrays by state-dict name -> ours by path (the inverse of ``to_llama``)."""
    return {
        path: np.concatenate([theirs[n].T for n in names], axis=-1) if linear else theirs[names[0]]
        for path, names, linear in llama_names(cfg)
    }


def flat(state: nnx.State) -> dict[str, np.ndarray]:
    """An nnx state as ``{"a.b.c": array}``."""
    return {".".join(map(str, p)): np.asarray(v[...]) for p, v in nnx.to_flat_state(state)}


def llama(cfg: TransformerConfig, params: dict[str, np.ndarray]):
    """transformers' ``LlamaForCausalLM`` of ``cfg``'s shape holding our ``params``."""
    llama_cfg = transformers.LlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.embedding_dim,
        intermediate_size=cfg.ffn_dim,
        num_hidden_layers=cfg.num_blocks,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        hidden_act="silu",
        rms_norm_eps=cfg.norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        attention_bias=False,
        mlp_bias=False,
        tie_word_embeddings=cfg.tie_weights,
        attn_implementation="eager",
    )
    model = transformers.LlamaForCausalLM(llama_cfg).float()
    state = {k: torch.from_numpy(v.copy()) for k, v in to_llama(cfg, params).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    # A tied head is the embedding: its state-dict entry is not ours to set.
    assert not unexpected and set(missing) <= ({"lm_head.weight"} if cfg.tie_weights else set())
    return model


@pytest.fixture(scope="module")
def runs() -> dict[bool, dict]:
    """Per ``tie_weights``: ``{"logits": (ours, theirs), "grads": (ours, theirs)}``, grads
    by our parameter path, on the same (redrawn) weights and data."""
    cfgs = [TransformerConfig(**CFG, tie_weights=tie) for tie in (False, True)]
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, CFG["vocab_size"], (B, S))
    targets = rng.integers(0, CFG["vocab_size"], (B, S))
    graphdefs, params = [], []
    for cfg in cfgs:
        # Only the shapes: every weight is redrawn (and an eager initialisation would
        # compile each of its small ops separately).
        graphdef, shapes = nnx.split(
            nnx.eval_shape(lambda c=cfg: TransformerLM(c, rngs=nnx.Rngs(0)))
        )
        graphdefs.append(graphdef)
        # Norm scales around 1 (not at 1); matrices at a scale that keeps the attention
        # and the softmax away from saturation.
        params.append(
            jax.tree.map(
                lambda p: jnp.asarray(
                    1.0 + 0.2 * rng.standard_normal(p.shape)
                    if len(p.shape) == 1
                    else 0.15 * rng.standard_normal(p.shape),
                    jnp.float32,
                ),
                shapes,
            )
        )

    @jax.jit
    def logits_and_grads(params):
        # Both models in one program: one compilation for the module.
        out = []
        for graphdef, p in zip(graphdefs, params, strict=True):

            def loss_fn(p, graphdef=graphdef):
                logits = nnx.merge(graphdef, p)(jnp.asarray(tokens, jnp.int32))
                ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.asarray(targets))
                return jnp.mean(ce), logits

            (_, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(p)
            out.append((logits, grads))
        return out

    results = {}
    for cfg, p, (logits, grads) in zip(cfgs, params, logits_and_grads(params), strict=True):
        model = llama(cfg, flat(p))
        out = model(torch.from_numpy(tokens))
        loss = torch.nn.functional.cross_entropy(
            out.logits.reshape(-1, cfg.vocab_size), torch.from_numpy(targets).reshape(-1)
        )
        loss.backward()
        their_grads = {n: w.grad.numpy() for n, w in model.named_parameters()}
        results[cfg.tie_weights] = {
            "logits": (np.asarray(logits), out.logits.detach().numpy()),
            "grads": (flat(grads), from_llama(cfg, their_grads)),
        }
    return results


TIES = pytest.mark.parametrize("tie", [False, True], ids=["untied", "tied"])


@TIES
def test_logits_match_llama_for_causal_lm(runs, tie):
    ours, theirs = runs[tie]["logits"]
    atol, rtol = TOL["float32"]
    np.testing.assert_allclose(ours, theirs, atol=atol, rtol=rtol)


@TIES
def test_gradients_match_llama_for_every_parameter(runs, tie):
    ours, theirs = runs[tie]["grads"]
    assert set(ours) == set(theirs)
    atol, rtol = TOL["float32"]
    for path in sorted(ours):
        np.testing.assert_allclose(ours[path], theirs[path], atol=atol, rtol=rtol, err_msg=path)
