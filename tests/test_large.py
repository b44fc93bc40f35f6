"""The xLSTM-Large family without PyTorch: config porting, initialisation, the forms of the
cell against each other in float64, pieces and decoding, mixed precision, and the 7B's
shapes (abstractly). Parity with the references is in test_large_parity.py."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import _perturbed, jit_call, jit_with_state, rel_err, with_weights_of

from xlstm_jax import ConfigError, generate, xLSTMLarge, xLSTMLargeConfig
from xlstm_jax.models.xlstm_large.convert import detect_format, from_state_dict, iter_state_dict

SMALL = xLSTMLargeConfig(embedding_dim=64, num_heads=2, num_blocks=2, vocab_size=50, chunk_size=8)
XLSTM_7B = xLSTMLargeConfig(
    embedding_dim=4096,
    num_heads=8,
    num_blocks=32,
    vocab_size=50304,
    ffn_proj_factor=2.667,
    dtype="bfloat16",
)


def perturbed(config, seed=0, scale=0.1):
    return _perturbed(config, seed, scale)


# --- config ---------------------------------------------------------------------------


def test_7b_dimensions_and_parameter_count():
    c = XLSTM_7B
    assert (c.qk_head_dim, c.v_head_dim, c.ffn_dim) == (256, 512, 10944)
    abstract = nnx.eval_shape(lambda: xLSTMLarge(c, rngs=nnx.Rngs(0)))
    n = sum(x.size for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
    E, V, L = 4096, 50304, 32
    per_block = E * (2048 * 2 + 4096 * 2) + 2 * (E * 8 + 8) + 4096 + 4096 * E + 3 * E * 10944
    per_block += 2 * E  # the two RMSNorm weights
    assert n == 2 * V * E + L * per_block + E
    assert 6.8e9 < n < 7.0e9
    state = abstract.init_state(1).blocks[0].cell
    assert state.C.shape == (1, 8, 256, 512) and state.n.shape == (1, 8, 256)


@pytest.mark.parametrize("E, factor, expected", [(768, 2.6667, 2048), (4096, 2.667, 10944),
                                                 (64, 2.6667, 192), (100, 1.0, 128)])  # fmt: skip
def test_ffn_width_rounds_as_the_reference(E, factor, expected):
    # The reference: int(((x + m - 1) // m) * m) on the float x (xlstm_large/utils.py).
    c = xLSTMLargeConfig(embedding_dim=E, num_heads=2, num_blocks=1, vocab_size=8,
                         ffn_proj_factor=factor)  # fmt: skip
    assert c.ffn_dim == expected == int(((E * factor + 63) // 64) * 64)


def test_from_dict_ports_hf_and_reference_configs():
    hf = {
        "model_type": "xlstm",
        "architectures": ["xLSTMForCausalLM"],
        "hidden_size": 128,
        "embedding_dim": 128,
        "num_hidden_layers": 3,
        "num_blocks": None,
        "num_heads": 2,
        "vocab_size": 99,
        "chunkwise_kernel": "chunkwise--triton_xl_chunk",
        "weight_mode": "fused",
        "tie_word_embeddings": False,
        "id2label": {"0": "LABEL_0"},
        "dtype": "bfloat16",
    }
    c = xLSTMLargeConfig.from_dict(hf, chunk_size=32)
    assert (c.embedding_dim, c.num_blocks, c.vocab_size, c.chunk_size) == (128, 3, 99, 32)
    assert c.dtype == "float32"  # HF's "dtype" is the stored dtype, not our compute dtype
    ref = dict(embedding_dim=64, num_heads=4, num_blocks=2, vocab_size=10, mode="inference")
    assert xLSTMLargeConfig.from_dict(ref).num_heads == 4


_BASE = {"num_heads": 2, "num_blocks": 1, "vocab_size": 10}


@pytest.mark.parametrize(
    "d, match",
    [
        ({**_BASE, "hidden_size": 64, "embedding_dim": 128}, "contradicts"),
        ({**_BASE, "embedding_dm": 64}, "did you mean 'embedding_dim'"),
        ({**_BASE, "embedding_dim": 64, "tie_word_embeddings": True}, "untied"),
        (_BASE, "lacks embedding_dim"),
    ],
)
def test_from_dict_errors_name_the_field(d, match):
    with pytest.raises(ConfigError, match=match):
        xLSTMLargeConfig.from_dict(d)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(num_heads=3), "multiple of num_heads"),
        (dict(gate_soft_cap=0.0), "gate_soft_cap"),
        (dict(impl="pallas", chunk_size=24), "power of two"),
        (dict(dtype="float8"), "dtype"),
        (dict(tie_weights=True), "untied"),
    ],
)
def test_bad_configs_raise(kw, match):
    with pytest.raises(ConfigError, match=match):
        dataclasses.replace(SMALL, **kw)


# --- initialisation -------------------------------------------------------------------


def test_initialisation_follows_the_family():
    model = xLSTMLarge(dataclasses.replace(SMALL, num_heads=4), rngs=nnx.Rngs(0))
    layer = model.backbone.blocks[0].mlstm_layer
    np.testing.assert_array_equal(layer.igate_preact.bias[...], -10.0)
    np.testing.assert_allclose(layer.fgate_preact.bias[...], np.linspace(3, 6, 4), rtol=1e-6)
    for dense in (layer.igate_preact, layer.fgate_preact, layer.ogate_preact):
        assert not np.any(dense.kernel[...])
    assert not np.any(model.backbone.blocks[0].ffn.proj_up_gate.kernel[...])
    np.testing.assert_array_equal(layer.multihead_norm.weight[...], 1.0)
    std = float(np.std(model.embedding.embedding[...]))
    assert abs(std - np.sqrt(2 / (5 * 64))) < 0.01


# --- the forms of the cell, pieces, decoding -------------------------------------------


@nnx.jit  # one compiled program: eager, forward and backward run op by op (slower on CPU)
def _loss_grads(model, tokens):
    def loss_fn(m):
        logits = m(tokens[:, :-1])
        return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

    return nnx.grad(loss_fn)(model)


def test_forms_agree_in_float64_outputs_and_gradients():
    tokens = jax.random.randint(jax.random.key(3), (2, 14), 0, 50)  # S = 13: not a multiple of 8
    with jax.enable_x64(True):
        # eps enters each form in its own stabilised domain, so the forms are O(eps) apart
        # (test_parity.py); with eps = 0 they are the same function.
        base = dataclasses.replace(
            SMALL, dtype="float64", param_dtype="float64", impl="xla", eps=0.0
        )
        ref = perturbed(dataclasses.replace(base, form="parallel"))
        params = nnx.state(ref, nnx.Param)
        ref_logits = np.asarray(jit_call(ref, tokens))
        ref_grads = jax.tree.leaves(_loss_grads(ref, tokens))
        for form in ("chunkwise", "recurrent"):
            model = xLSTMLarge(dataclasses.replace(base, form=form), rngs=nnx.Rngs(0))
            nnx.update(model, params)
            logits = np.asarray(jit_call(model, tokens))
            assert np.abs(logits - ref_logits).max() < 1e-10, form
            grads = jax.tree.leaves(_loss_grads(model, tokens))
            assert max(rel_err(g, r) for g, r in zip(grads, ref_grads, strict=True)) < 1e-10, form


def test_pieces_and_steps_equal_the_whole_sequence():
    model = perturbed(SMALL)
    tokens = jax.random.randint(jax.random.key(4), (3, 30), 0, 50)
    whole = np.asarray(jit_call(model, tokens))
    logits_a, state = jit_with_state(model, tokens[:, :13], model.init_state(3))
    logits_b, state = jit_with_state(model, tokens[:, 13:27], state)
    steps = []
    for t in range(27, 30):
        step, state = jit_with_state(model, tokens[:, t : t + 1], state)
        steps.append(step)
    pieces = np.concatenate([logits_a, logits_b, *steps], axis=1)
    np.testing.assert_allclose(pieces, whole, atol=2e-5, rtol=0)


def test_bf16_compute_keeps_gates_states_and_logits_float32():
    model = perturbed(dataclasses.replace(SMALL, dtype="bfloat16"))
    tokens = jax.random.randint(jax.random.key(5), (2, 17), 0, 50)
    logits, state = jit_with_state(model, tokens, None)
    assert logits.dtype == jnp.float32 and np.all(np.isfinite(np.asarray(logits)))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state))
    ref = perturbed(SMALL)  # same weights in float32
    err = np.abs(np.asarray(logits) - np.asarray(jit_call(ref, tokens))).max()
    assert err < 0.1, f"bf16 vs fp32 logits differ by {err}"


def test_logits_are_soft_capped():
    raw = perturbed(dataclasses.replace(SMALL, output_logit_soft_cap=None), scale=1.0)
    capped = xLSTMLarge(dataclasses.replace(SMALL, output_logit_soft_cap=2.0), rngs=nnx.Rngs(0))
    nnx.update(capped, nnx.state(raw, nnx.Param))
    tokens = jnp.arange(7)[None]
    raw_logits = np.asarray(jit_call(raw, tokens))
    assert np.abs(raw_logits).max() > 4.0  # the cap matters
    np.testing.assert_allclose(
        np.asarray(jit_call(capped, tokens)), 2.0 * np.tanh(raw_logits / 2.0), 1e-6
    )


def test_remat_gives_the_same_gradients():
    tokens = jax.random.randint(jax.random.key(6), (2, 12), 0, 50)
    a = perturbed(SMALL)
    # The weights perturbed gives the remat config too (remat adds no parameter), without a
    # second initialisation to run.
    b = with_weights_of(a, dataclasses.replace(SMALL, remat=True))
    grads_a, grads_b = _loss_grads(a, tokens), _loss_grads(b, tokens)
    for ga, gb in zip(jax.tree.leaves(grads_a), jax.tree.leaves(grads_b), strict=True):
        # Recomputation fuses differently: float32 rounding only (norm-relative).
        assert rel_err(gb, ga) < 1e-5


def test_generate_ragged_prompts_match_one_by_one():
    model = perturbed(SMALL)
    prompts = [[1, 2, 3, 4, 5], [7, 8]]
    both = generate(model, prompts, 6, temperature=0.0)
    for row, prompt in zip(both, prompts, strict=True):
        np.testing.assert_array_equal(row, generate(model, [prompt], 6, temperature=0.0)[0])


# --- conversion without torch ----------------------------------------------------------


@pytest.mark.parametrize("fmt", ["xlstm_large", "hf"])
@pytest.mark.parametrize("mode", ["single", "fused"])
def test_state_dict_round_trip_numpy(fmt, mode):
    model = perturbed(dataclasses.replace(SMALL, use_bias=True))
    if fmt == "hf":  # HF's out norm has no bias (convert_large docstring)
        with pytest.raises(ConfigError, match="out_norm has no bias"):
            dict(iter_state_dict(model, fmt, mode))
        model.backbone.out_norm.bias[...] = jnp.zeros_like(model.backbone.out_norm.bias[...])
    sd = dict(iter_state_dict(model, fmt, mode))
    assert detect_format(sd) == (fmt, mode)
    assert ("backbone.out_norm.bias" in sd) == (fmt == "xlstm_large")
    back = from_state_dict(sd, model.config)
    tokens = jnp.arange(10)[None] % 50
    np.testing.assert_array_equal(
        np.asarray(jit_call(back, tokens)), np.asarray(jit_call(model, tokens))
    )


def test_state_dict_mismatch_is_a_clear_error():
    model = perturbed(SMALL)
    sd = dict(iter_state_dict(model, "xlstm_large"))
    with pytest.raises(ValueError, match="does not match the config"):
        from_state_dict(sd, dataclasses.replace(SMALL, num_blocks=3))
    with pytest.raises(ValueError, match="not an xLSTM-Large state dict"):
        from_state_dict({"foo": np.zeros(1)}, SMALL)


def test_7b_train_memory_estimate_counts_fp32_weights_and_adamw():
    from train.config import named
    from train.config.overrides import apply_overrides
    from train.loop.memory import estimate_memory

    cfg = apply_overrides(named.load("xlstm_7b"), ["train.micro_batch_size=1"])
    n = 6_865_424_896  # test_7b_dimensions_and_parameter_count
    mem = estimate_memory(cfg, n)
    assert mem["params"] == 4 * n and mem["optimizer"] == 8 * n
    # One 8192-token sequence with remat: 32 bf16 block inputs (2 GiB), one block's
    # activations (~1.7 GiB, 0.5 GiB of it the fp32 chunk-start states) and the fp32
    # logits with their softmax and gradient (4.6 GiB).
    assert 7 < mem["activations"] / 2**30 < 10
