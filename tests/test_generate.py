"""Stateful inference: greedy/sampled generation, prompts of different lengths, parity
with the reference's step() loop, gradients through carried states."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import (
    TOL,
    mixed_config,
    perturbed_model,
    rel_err,
    require_reference,
    tokens,
    torch_reference_config,
)

from xlstm_jax import convert, generate, sample_logits


@pytest.fixture(scope="module")
def model():
    return perturbed_model(mixed_config(), scale=0.3)


# The stateless forward and the prefill, jitted once for the module: eager, the model runs
# op by op, several times slower on CPU (equal shapes reuse the compiled program).
_forward = nnx.jit(lambda m, seq: m(seq))
_prefill = nnx.jit(lambda m, x: m.with_state(x, m.init_state(x.shape[0])))


def test_greedy_equals_argmax_chain_with_ragged_prompts(model):
    prompts = [[3, 1, 4, 1, 5], [9, 2], [6, 5, 3, 5]]
    out = generate(model, prompts, 6, temperature=0.0)
    assert out.shape == (3, 6) and out.dtype == np.int32
    for row, prompt in zip(out, prompts, strict=True):
        # Argmax-chain property, checked with one full (stateless) forward over the
        # prompt and the continuation: each generated token is the argmax after its prefix.
        seq = jnp.asarray([prompt + list(row)], jnp.int32)
        expected = jnp.argmax(_forward(model, seq)[0], axis=-1)[len(prompt) - 1 : -1]
        np.testing.assert_array_equal(row, expected)
    np.testing.assert_array_equal(generate(model, prompts, 6, temperature=0.0), out)


def test_sampling_is_reproducible_by_rng(model):
    a = generate(model, [[1, 2, 3]] * 4, 8, temperature=1.0, rng=7)
    b = generate(model, [[1, 2, 3]] * 4, 8, temperature=1.0, rng=jax.random.key(7))
    c = generate(model, [[1, 2, 3]] * 4, 8, temperature=1.0, rng=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_top_k_and_top_p_restrict_the_support():
    logits = jnp.log(jnp.asarray([[0.05, 0.4, 0.1, 0.3, 0.15]] * 2000))
    keys = jax.random.key(0)
    top2 = np.asarray(sample_logits(logits, keys, top_k=2))
    assert set(top2.tolist()) == {1, 3}
    # Mass before token j (sorted): 0.4 -> 0, 0.3 -> 0.4, 0.15 -> 0.7, 0.1 -> 0.85.
    nucleus = np.asarray(sample_logits(logits, keys, top_p=0.75))
    assert set(nucleus.tolist()) == {1, 3, 4}
    assert set(np.asarray(sample_logits(logits, keys, top_p=1e-6)).tolist()) == {1}
    assert set(np.asarray(sample_logits(logits, keys)).tolist()) == {0, 1, 2, 3, 4}
    np.testing.assert_array_equal(sample_logits(logits[:3], keys, temperature=0.0), [1, 1, 1])


def test_eos_stops_a_sequence(model):
    greedy = generate(model, [[1, 2, 3]], 6, temperature=0.0)[0]
    eos = int(greedy[2])
    out = generate(model, [[1, 2, 3]], 6, temperature=0.0, eos_id=eos)[0]
    first = list(out).index(eos)
    assert list(out[: first + 1]) == list(greedy[: first + 1])
    assert all(t == eos for t in out[first:])


def test_bad_arguments_raise(model):
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, [[1]], 0)
    with pytest.raises(ValueError, match="temperature"):
        generate(model, [[1]], 2, temperature=-1.0)
    with pytest.raises(ValueError, match="top_p"):
        generate(model, [[1]], 2, top_p=1.5)
    with pytest.raises(ValueError, match="non-empty"):
        generate(model, [[1], []], 2)
    with pytest.raises(ValueError, match="vocab_size"):
        generate(model, [[1, 10_000]], 2)


def test_state_after_token_steps_equals_state_after_prefill(model):
    x = tokens(2, 11, model.config.vocab_size, seed=3)
    _, prefill_state = _prefill(model, x)
    state = model.init_state(2)
    step = nnx.jit(lambda m, tok, s: m.with_state(tok, s)[1])
    for t in range(11):
        state = step(model, x[:, t : t + 1], state)
    # Norm-relative per state (the measure of an fp32 accumulation): the third block's C
    # sums terms up to ~17 in two different orders (steps vs chunks), so an element that
    # cancels to ~0.03 carries an absolute rounding error ~1e-5 (JAX 0.12: 1.5e-5) while
    # the whole state agrees to ~1e-6.
    _, rtol = TOL["float32"]
    pairs = zip(jax.tree.leaves(state), jax.tree.leaves(prefill_state), strict=True)
    for n, (a, b) in enumerate(pairs):
        assert a.shape == b.shape and rel_err(a, b) < rtol, (n, rel_err(a, b))


@pytest.mark.slow
def test_gradient_through_carried_state_equals_whole_sequence():
    # float64, so that equality is exact up to rounding (the chunk boundaries differ).
    with jax.enable_x64(True):
        # One mLSTM and one sLSTM block: the state of each kind is carried.
        cfg = mixed_config(num_blocks=2, slstm_at=(1,), dtype="float64", param_dtype="float64")
        model = perturbed_model(cfg)
        x = tokens(2, 24, model.config.vocab_size, seed=4)
        inputs, targets = x[:, :-1], x[:, 1:]

        def whole(m):
            return optax.softmax_cross_entropy_with_integer_labels(m(inputs), targets).mean()

        def segments(m):
            la, state = m.with_state(inputs[:, :9], m.init_state(2))
            lb, _ = m.with_state(inputs[:, 9:], state)
            logits = jnp.concatenate([la, lb], axis=1)
            return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

        lw, gw = nnx.jit(nnx.value_and_grad(whole))(model)
        ls, gs = nnx.jit(nnx.value_and_grad(segments))(model)
        np.testing.assert_allclose(ls, lw, rtol=1e-12)
        for a, b in zip(jax.tree.leaves(gs), jax.tree.leaves(gw), strict=True):
            assert a.dtype == jnp.float64
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.reference
def test_converted_model_generates_like_reference_step_loop():
    torch, xlstm = require_reference()
    torch.manual_seed(0)
    tm = xlstm.xLSTMLMModel(torch_reference_config(xlstm))
    tm.reset_parameters()
    with torch.no_grad():
        for p in tm.parameters():
            p.add_(0.3 * torch.randn_like(p))
    tm.eval()
    prompt = [5, 17, 3, 42, 8]
    n_new = 10
    with torch.no_grad():
        state, logits = None, None
        for tok in prompt:
            logits, state = tm.step(torch.tensor([[tok]]), state)
        ref = []
        for _ in range(n_new):
            nxt = int(logits[0, -1].argmax())
            ref.append(nxt)
            logits, state = tm.step(torch.tensor([[nxt]]), state)
    ours = generate(
        convert.from_torch(tm, slstm_backend="vanilla"), [prompt], n_new, temperature=0.0
    )
    assert list(ours[0]) == ref
