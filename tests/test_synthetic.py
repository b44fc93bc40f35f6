"""Synthetic benchmarks: generators against independent computations, the loss mask, the
Transformer baseline, and a real CLI run that writes the scaled-accuracy metrics."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from train.config import ConfigError, DataConfig, named
from train.config.overrides import apply_overrides
from train.data.batch import Batch, all_scored
from train.data.objective import make_loss_fn, scored_cross_entropy, scored_predictions
from train.data.synthetic import (
    MQAR_VOCAB,
    TASKS,
    describe,
    eval_set,
    make_batch,
    max_scored,
    mqar_example,
    scaled_accuracy,
    train_batches,
)
from xlstm_jax import TransformerConfig, TransformerLM, xLSTMLMModel
from xlstm_jax.models.transformer.model import apply_rotary

ROOT = Path(__file__).resolve().parents[1]

# The paper's Table 6: (vocabulary size, s_rand).
PAPER = {
    "parity": (3, 1 / 2),
    "even_pairs": (3, 1 / 2),
    "cycle_navigation": (9, 1 / 5),
    "mod_arithmetic": (10, 1 / 5),
    "majority": (64, 1 / 63),
    "majority_count": (64, 1 / 63),
    "repetition": (12, 1 / 10),
    "bucket_sort": (11, 1 / 10),
    "missing_duplicate": (11, 1 / 9),
    "mod_arithmetic_brackets": (12, 1 / 5),
    "odds_first": (12, 1 / 10),
    "reverse_string": (12, 1 / 10),
    "stack_manipulation": (11, 1 / 4),
    "solve_equation": (14, 1 / 5),
    "set": (128, 1 / 126),
}
# Tasks whose answer length depends on the sample: it ends with an END id, at most
# answer_len(n) tokens. Every other task answers with exactly answer_len(n) tokens.
END = {"stack_manipulation": 8, "set": 127}


def _split(task, ex):
    """(x, y) from an example, using only the layout: input, SEP at n, answer after it."""
    n = ex.length
    assert ex.tokens[n] == task.sep
    return ex.tokens[:n], ex.tokens[n + 1 :]


def _examples(name, count=300, lo=1, hi=40, seed=0):
    task = TASKS[name]
    rng = np.random.default_rng(seed)
    ns = rng.choice(task.lengths(lo, hi), count)
    return task, [task.example(rng, int(n)) for n in ns]


def _parity(x):
    return [sum(int(b) for b in x) % 2]


def _even_pairs(x):
    s = "".join("ab"[int(t)] for t in x)
    pairs = sum(s[i : i + 2] in ("ab", "ba") for i in range(len(s) - 1))
    return [int(pairs % 2 == 0)]


def _cycle_navigation(x):
    pos = 0
    for t in x:
        pos = {0: pos, 1: (pos + 1) % 5, 2: (pos - 1) % 5}[int(t)]
    return [4 + pos]


def _mod_arithmetic(x):
    expr = "".join("01234+-*"[int(t)] for t in x)
    return [eval(expr) % 5]  # Python's precedence: * before + and -


def _majority(x):
    counts = Counter(int(t) for t in x)
    top = max(counts.values())
    return [min(k for k, c in counts.items() if c == top)]


def _majority_count(x):
    return [max(Counter(int(t) for t in x).values()) % 63]


def _missing_duplicate(x):
    half = len(x) // 2
    (pos,) = np.nonzero(x == 9)[0]
    return [x[(pos + half) % len(x)]]


def _mod_arithmetic_brackets(x):
    expr = "".join("01234+-*()"[int(t)] for t in x)
    return [eval(expr) % 5]  # fully bracketed; "-" after "(" or an operator is unary


def _solve_equation(x):
    text = "".join("01234+-*()x="[int(t)] for t in x)
    lhs, rhs = text.split("=")
    assert lhs.count("x") == 1 and rhs in "01234" and len(rhs) == 1, text
    # Try every digit for x: the label must be the one and only solution mod 5.
    (solution,) = [a for a in range(5) if eval(lhs.replace("x", str(a))) % 5 == int(rhs)]
    return [solution]


def _odds_first(x):
    # 1-based positions: x_1 x_3 ... then x_2 x_4 ...
    odd = [t for i, t in enumerate(x, start=1) if i % 2 == 1]
    even = [t for i, t in enumerate(x, start=1) if i % 2 == 0]
    return odd + even


def _stack_manipulation(x):
    # Symbols a b c = 0-2 form the initial stack (bottom first), then only actions:
    # POP = 3, PUSH a b c = 4-6. Keep the top at index 0 here (the generator appends).
    k = 0
    while k < len(x) and x[k] < 3:
        k += 1
    assert k >= 1 and all(3 <= t <= 6 for t in x[k:]), x
    stack = [int(t) for t in reversed(x[:k])]
    for t in x[k:]:
        if t == 3:
            stack = stack[1:]
        else:
            stack.insert(0, int(t) - 4)
    return stack + [END["stack_manipulation"]]


def _set(x):
    seen = []
    for t in x:
        if t not in seen:
            seen.append(int(t))
    return seen + [END["set"]]


ORACLES = {
    "parity": _parity,
    "even_pairs": _even_pairs,
    "cycle_navigation": _cycle_navigation,
    "mod_arithmetic": _mod_arithmetic,
    "majority": _majority,
    "majority_count": _majority_count,
    "repetition": lambda x: list(x),
    "bucket_sort": lambda x: sorted(x),
    "missing_duplicate": _missing_duplicate,
    "mod_arithmetic_brackets": _mod_arithmetic_brackets,
    "odds_first": _odds_first,
    "reverse_string": lambda x: list(x[::-1]),
    "stack_manipulation": _stack_manipulation,
    "solve_equation": _solve_equation,
    "set": _set,
}
# The tasks added after the first nine: their data-config paths are checked end to end.
NEW = [
    "mod_arithmetic_brackets",
    "odds_first",
    "reverse_string",
    "set",
    "solve_equation",
    "stack_manipulation",
]


def test_every_formal_task_has_an_oracle_and_the_papers_vocab_and_chance_level():
    assert set(ORACLES) == set(PAPER) == {n for n, t in TASKS.items() if t.kind == "formal"}
    for name, (vocab, s_rand) in PAPER.items():
        assert (TASKS[name].vocab_size, TASKS[name].s_rand) == (vocab, pytest.approx(s_rand))
    assert TASKS["mqar"].vocab_size == MQAR_VOCAB == 8192


@pytest.mark.parametrize("name", sorted(ORACLES))
def test_labels_match_an_independent_computation(name):
    task, exs = _examples(name)
    answers = set()
    for ex in exs:
        _check(task, name, ex)
        answers.update(int(t) for t in _split(task, ex)[1])
    if name != "majority_count":  # (its counts are small at these lengths)
        assert len(answers) >= round(1 / task.s_rand) * 0.5, answers  # answers vary


def _check(task, name, ex):
    """Asserts everything one example must satisfy: the layout (SEP at n, input and answer
    lengths, only the answer scored, ids in the vocabulary) and the label."""
    x, y = _split(task, ex)
    assert len(x) == ex.length
    assert list(y) == list(ORACLES[name](x)), (name, x, y)
    if name in END:
        assert 1 <= len(y) <= task.answer_len(ex.length)  # an empty stack: END alone
    else:
        assert len(y) == task.answer_len(ex.length)
    np.testing.assert_array_equal(ex.scored, np.arange(len(ex.tokens)) > ex.length)
    assert ex.tokens.min() >= 0 and ex.tokens.max() < task.vocab_size
    assert task.sep not in x


@pytest.mark.parametrize("name", sorted(ORACLES))
def test_every_length_a_task_claims_makes_a_valid_example(name):
    # Training (3-40) and evaluation (40-256) lengths: each claimed n really gives an
    # example of exactly n input tokens (bracketed expressions included).
    task = TASKS[name]
    claimed = task.lengths(3, 256).tolist()
    parity = {"mod_arithmetic": 1, "missing_duplicate": 0}.get(name)
    assert claimed == [n for n in range(3, 257) if parity is None or n % 2 == parity]
    rng = np.random.default_rng(1)
    for n in claimed:
        ex = task.example(rng, n)
        assert ex.length == n
        _check(task, name, ex)


@pytest.mark.parametrize("name", sorted(ORACLES))
def test_examples_are_a_pure_function_of_the_seed(name):
    task = TASKS[name]

    def draw(seed):
        rng = np.random.default_rng(seed)
        return [task.example(rng, n).tokens for n in task.lengths(3, 60)[::4]]

    first = draw(5)
    assert all(np.array_equal(a, b) for a, b in zip(first, draw(5), strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, draw(6), strict=True))


def test_expression_tasks_use_every_operator_and_nest_brackets():
    for name, vocab in (("mod_arithmetic_brackets", "01234+-*()"), ("solve_equation", None)):
        _, exs = _examples(name, count=100, lo=20, hi=40)
        text = "".join("01234+-*()x="[int(t)] for ex in exs for t in ex.tokens[: ex.length])
        assert all(c in text for c in "+-*(") and "((" in text
        if vocab:
            assert set(text) <= set(vocab)


def test_variable_answers_vary_in_length_and_sets_repeat_at_eval_lengths():
    for name in END:
        _, exs = _examples(name, count=100, lo=3, hi=40)
        assert len({len(ex.tokens) - ex.length for ex in exs}) > 5
    # Long inputs repeat symbols, so the set is shorter than the input.
    _, exs = _examples("set", count=20, lo=200, hi=256)
    assert all(len(ex.tokens) - ex.length - 2 < min(ex.length, 126) for ex in exs)


@pytest.mark.parametrize("name", NEW)
def test_new_tasks_fit_check_setup_eval_set_describe_and_train_batches(name):
    task = TASKS[name]
    need = task.width(40)  # the longest training example: n = 40, SEP, the longest answer
    with pytest.raises(ConfigError, match=f"needs sequences of {need} tokens"):
        DataConfig(path=f"synthetic:{name}", seq_len=need - 2)
    cfg = DataConfig(path=f"synthetic:{name}", seq_len=need - 1)
    assert f"synthetic:{name}, vocabulary {task.vocab_size}" in describe(cfg)
    batch = train_batches(cfg, batch_size=16, seed=0)[3]
    assert batch.tokens.shape == batch.loss_mask.shape == (16, need)
    batches = eval_set(cfg, batch_size=4, batches_per_bucket=1, seed=0)
    assert [b.bucket for b in batches] == ["40-63", "64-127", "128-256"]
    for b in [*batches, batch]:
        ids, scored = b if isinstance(b, Batch) else b.batch
        for row, s in zip(ids, scored, strict=True):
            # Scored: a run right after SEP, the answer, checked against the oracle.
            (where,) = np.nonzero(s)
            n = where[0] - 1
            np.testing.assert_array_equal(where, np.arange(n + 1, where[-1] + 1))
            assert row[n] == task.sep and task.sep not in row[:n]
            assert list(row[n + 1 : where[-1] + 1]) == list(ORACLES[name](row[:n]))
        if not isinstance(b, Batch):
            lo, hi = map(int, b.bucket.split("-"))
            assert lo <= b.lengths.min() and b.lengths.max() <= hi
            assert b.batch.tokens.shape[1] == max(task.width(n) for n in range(lo, hi + 1))


def test_missing_duplicate_and_arithmetic_respect_their_length_parity():
    for name, rest in (("missing_duplicate", 0), ("mod_arithmetic", 1)):
        task, exs = _examples(name, count=50, lo=40, hi=256)
        assert {ex.length % 2 for ex in exs} == {rest}
        assert all(40 <= ex.length <= 256 for ex in exs)


def test_train_batches_lengths_widths_and_determinism():
    cfg = DataConfig(path="synthetic:parity", seq_len=41, train_lengths=(3, 40))
    ds = train_batches(cfg, batch_size=64, seed=3)
    batch = ds[7]
    assert batch.tokens.shape == (64, 42) and batch.tokens.dtype == np.int32
    assert batch.loss_mask.dtype == bool
    ids, scored = batch
    # One scored token per row, right after SEP, at input length n + 1 with n in [3, 40].
    assert (scored.sum(1) == 1).all()
    n = np.argmax(scored, axis=1) - 1
    assert n.min() >= 3 and n.max() <= 40 and len(set(n.tolist())) > 10
    assert (ids[np.arange(64), n] == 2).all()
    again = train_batches(cfg, 64, seed=3)[7]
    np.testing.assert_array_equal(again.tokens, batch.tokens)
    np.testing.assert_array_equal(again.loss_mask, batch.loss_mask)
    assert not np.array_equal(train_batches(cfg, 64, seed=4)[7].tokens, batch.tokens)
    assert not np.array_equal(ds[8].tokens, batch.tokens)
    # Hosts take disjoint rows of the same global batch (tokens and mask alike).
    parts = [train_batches(cfg, 64, seed=3, process_index=p, process_count=2)[7] for p in (0, 1)]
    for field in ("tokens", "loss_mask"):
        rows = np.concatenate([getattr(p, field) for p in parts])
        np.testing.assert_array_equal(rows, getattr(batch, field)[np.r_[0:64:2, 1:64:2]])


def test_eval_set_buckets_cover_the_eval_lengths_and_are_fixed():
    cfg = DataConfig(path="synthetic:bucket_sort", seq_len=81, eval_buckets=(40, 64, 128, 256))
    batches = eval_set(cfg, batch_size=16, batches_per_bucket=2, seed=0)
    assert [b.bucket for b in batches] == ["40-63"] * 2 + ["64-127"] * 2 + ["128-256"] * 2
    for b in batches:
        lo, hi = map(int, b.bucket.split("-"))
        assert lo <= b.lengths.min() and b.lengths.max() <= hi
        # Bucket sort answers with n tokens: the widest example is 2 * hi + 1 tokens.
        assert b.batch.tokens.shape == (16, 2 * hi + 1)
        assert (b.batch.loss_mask.sum(1) == b.lengths).all()
    assert batches[-1].lengths.max() > 200  # reaches the long end
    again = eval_set(cfg, 16, 2, seed=0)
    assert all(
        np.array_equal(a.batch.tokens, b.batch.tokens) for a, b in zip(batches, again, strict=True)
    )


def test_mqar_values_follow_their_keys_and_queries_follow_a_power_law():
    rng = np.random.default_rng(0)
    gaps = []
    for _ in range(100):
        ex = mqar_example(rng, 129, 8)
        pairs = dict(zip(ex.tokens[0:16:2].tolist(), ex.tokens[1:16:2].tolist(), strict=True))
        assert len(pairs) == 8
        assert all(1 <= k < 4096 <= v < 8192 for k, v in pairs.items())
        (where,) = np.nonzero(ex.scored)
        assert len(where) == 8 and where.min() > 16
        # The scored token is the value of the key just before it; every key is queried.
        assert sorted(ex.tokens[where - 1].tolist()) == sorted(pairs)
        assert all(pairs[int(ex.tokens[w - 1])] == ex.tokens[w] for w in where)
        gaps += ((where - 17) // 2).tolist()
    # Gaps in [0, 56): a uniform draw puts a quarter in the first quarter.
    assert np.mean(np.array(gaps) < 14) > 0.45


def test_scaled_accuracy_and_unscored_padding():
    assert scaled_accuracy(0.5, 0.5) == 0 and scaled_accuracy(1.0, 0.5) == 1
    assert scaled_accuracy(0.6, 0.2) == pytest.approx(0.5)
    assert scaled_accuracy(0.0, 0.5) == -1  # below chance is negative
    # Examples of different lengths share a batch: each row's answer is scored, its
    # padding is id 0 and never scored.
    batch, lengths = make_batch(TASKS["parity"], np.random.default_rng(0), 8, 12, (3, 10), 0)
    assert len(set(lengths.tolist())) > 1
    for row, mask, n in zip(batch.tokens, batch.loss_mask, lengths, strict=True):
        np.testing.assert_array_equal(np.nonzero(mask)[0], [n + 1])  # the one answer token
        assert (row[n + 2 :] == 0).all()


def test_training_loss_counts_only_scored_tokens():
    cfg = TransformerConfig(vocab_size=11, embedding_dim=32, num_heads=2)
    graphdef, params, rest = nnx.split(TransformerLM(cfg, rngs=nnx.Rngs(0)), nnx.Param, ...)
    loss = jax.jit(make_loss_fn(graphdef, rest))
    tokens = np.random.default_rng(0).integers(0, 11, (2, 9)).astype(np.int32)
    logits = nnx.merge(graphdef, params, rest)(jnp.asarray(tokens[:, :-1]))
    ce = np.asarray(optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]))
    # Text batches (every token scored): the plain mean.
    assert float(loss(params, all_scored(tokens))) == pytest.approx(ce.mean(), rel=1e-5)
    scored = np.zeros_like(tokens, bool)
    scored[0, 4], scored[1, 8] = True, True
    expected = (ce[0, 3] + ce[1, 7]) / 2
    assert float(loss(params, Batch(tokens, scored))) == pytest.approx(expected, rel=1e-5)


def _tiny_model(kind):
    if kind == "llama":
        cfg = TransformerConfig(vocab_size=19, embedding_dim=16, num_heads=2)
        return TransformerLM(cfg, rngs=nnx.Rngs(0))
    cfg = dataclasses.replace(named.load("mqar_xlstm11").model, vocab_size=19, embedding_dim=16)
    return xLSTMLMModel(cfg, rngs=nnx.Rngs(0))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["xlstm", "llama"])
def test_head_on_scored_positions_only_gives_the_full_loss_and_gradients(kind):
    model = _tiny_model(kind)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    rng = np.random.default_rng(3)
    tokens = rng.integers(0, 19, (3, 14)).astype(np.int32)
    scored = np.zeros_like(tokens, bool)
    scored[0, [2, 5, 13]] = True  # 3 scored
    scored[1, [1, 7]] = True  # fewer than max_scored: the rest is masked
    scored[2, [4, 6, 9]] = True
    batch = Batch(jnp.asarray(tokens), jnp.asarray(scored))
    # Every call jitted (as the trainer runs them): eager, they run op by op, several times
    # slower on CPU.
    x = jnp.asarray(tokens[:, :-1])
    h = nnx.jit(lambda m, t: m.hidden_states(t))(model, x)
    head = nnx.jit(lambda m, h: m.logits(h))(model, h)
    np.testing.assert_allclose(head, nnx.jit(lambda m, t: m(t))(model, x), atol=1e-6)
    logits, targets, mask = nnx.jit(scored_predictions, static_argnums=2)(model, batch, 3)
    assert logits.shape == (3, 3, 19) and mask.tolist() == [[1, 1, 1], [1, 1, 0], [1, 1, 1]]
    np.testing.assert_array_equal(targets[0], tokens[0, [2, 5, 13]])
    full, sparse = make_loss_fn(graphdef, rest), make_loss_fn(graphdef, rest, max_scored=3)
    (l_full, g_full), (l_sparse, g_sparse) = (
        jax.jit(jax.value_and_grad(f))(params, batch) for f in (full, sparse)
    )
    assert float(l_sparse) == pytest.approx(float(l_full), rel=1e-6)
    for a, b in zip(jax.tree.leaves(g_full), jax.tree.leaves(g_sparse), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
    # Per-row sums for the evaluation match too: cross-entropy, correct count, count.
    evaluate = nnx.jit(scored_cross_entropy, static_argnums=2)
    for a, b in zip(evaluate(model, batch, None), evaluate(model, batch, 3), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5)


def test_mqar_configs_tie_the_head_and_score_only_the_value_positions():
    for name in ("mqar_xlstm01", "mqar_xlstm10", "mqar_xlstm11", "llama_mqar"):
        cfg = named.load(name)
        assert cfg.model.tie_weights and cfg.model.vocab_size == MQAR_VOCAB
        assert max_scored(cfg.data) == cfg.data.num_kv_pairs == 8
        ex = mqar_example(np.random.default_rng(0), cfg.data.seq_len + 1, 8)
        assert ex.scored.sum() == 8
    assert max_scored(named.load("parity_xlstm11").data) is None


def test_transformer_shapes_and_causality():
    cfg = TransformerConfig(vocab_size=13, embedding_dim=32, num_blocks=2, num_heads=4)
    model = TransformerLM(cfg, rngs=nnx.Rngs(1))
    tokens = jnp.asarray(np.random.default_rng(1).integers(0, 13, (3, 24)), jnp.int32)
    logits = model(tokens)
    assert logits.shape == (3, 24, 13) and logits.dtype == jnp.float32
    changed = model(tokens.at[:, 15:].set((tokens[:, 15:] + 1) % 13))
    np.testing.assert_allclose(logits[:, :15], changed[:, :15], atol=1e-6)
    assert np.abs(np.asarray(logits[:, 15:] - changed[:, 15:])).max() > 1e-3
    with pytest.raises(ValueError, match="integer array"):
        model(jnp.zeros((2, 3)))
    with pytest.raises(ConfigError, match="even head dim"):
        TransformerConfig(vocab_size=13, embedding_dim=30, num_heads=2)


def test_rotary_scores_depend_only_on_the_offset():
    rng = np.random.default_rng(0)
    q = jnp.asarray(np.tile(rng.normal(size=(1, 1, 1, 8)), (1, 12, 1, 1)), jnp.float32)
    k = jnp.asarray(np.tile(rng.normal(size=(1, 1, 1, 8)), (1, 12, 1, 1)), jnp.float32)
    rq, rk = apply_rotary(q, 10_000.0), apply_rotary(k, 10_000.0)
    score = jnp.einsum("bsnh,btnh->st", rq, rk)
    np.testing.assert_allclose(score[5, 2], score[9, 6], rtol=1e-5)
    np.testing.assert_allclose(score[3, 3], jnp.sum(q[0, 0] * k[0, 0]), rtol=1e-5)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.path=synthetic:parityy"], "valid tasks: synthetic:parity, synthetic:even_pairs"),
        (["data.seq_len=20"], "needs sequences of 42 tokens; set data.seq_len=41"),
        (["data.eval_buckets=[64, 40]"], "data.eval_buckets must be"),
        (["data.path=synthetic:mqar", "data.seq_len=16"], "at least 32 tokens"),
    ],
)
def test_bad_synthetic_settings_name_the_fix(overrides, message):
    with pytest.raises(ConfigError) as e:
        apply_overrides(named.load("parity_xlstm01"), overrides)
    assert message in str(e.value)


def test_configs_have_the_papers_shapes():
    for arch, slstm in (("xlstm01", (0, 1)), ("xlstm10", ()), ("xlstm11", (1,))):
        m = named.load(f"parity_{arch}").model
        assert (m.num_blocks, m.embedding_dim, m.slstm_at) == (2, 64, slstm)
        if m.slstm_block is not None:
            assert m.slstm_block.slstm.conv1d_kernel_size == 0
            assert m.slstm_block.slstm.num_heads == 1
        if m.mlstm_block is not None:
            assert m.mlstm_block.mlstm.num_heads == 1
    assert named.load("mqar_xlstm11").model.slstm_at == (1,)
    assert named.load("mqar_xlstm10").model.slstm_at == ()
    assert isinstance(named.load("llama_parity").model, TransformerConfig)


# The command's outputs: leg 1 only (the model and loss paths run on every JAX above).
@pytest.mark.one_jax
@pytest.mark.parametrize(
    ("config", "overrides", "buckets"),
    [
        (
            "parity_xlstm01",
            ["data.eval_buckets=[40, 64, 96]"],
            ["40-63", "64-96"],
        ),
        ("llama_mqar", ["data.seq_len=32", "data.num_kv_pairs=4"], ["33"]),
        (  # an answer of varying length, closed by END
            "parity_xlstm11",
            [
                "data.path=synthetic:stack_manipulation",
                "model.vocab_size=11",
                "data.train_lengths=[3, 10]",
                "data.seq_len=21",
                "data.eval_buckets=[10, 16, 24]",
            ],
            ["10-15", "16-24"],
        ),
    ],
)
def test_cli_run_writes_scaled_accuracy_per_bucket_and_the_plot(
    tmp_path, config, overrides, buckets
):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    cmd = [
        sys.executable,
        "-m",
        "train.main",
        "--config",
        config,
        "--workdir",
        str(tmp_path),
        "--set",
        "train.steps=6",
        "train.batch_size=8",
        "train.eval_every=3",
        "train.eval_batches=1",
        "logging.every=3",
        "logging.progress_bar=false",
        "logging.tensorboard=false",
        *overrides,
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "val_scaled_acc" in r]
    assert [r["step"] for r in evals] == [3, 6]
    for r in evals:
        assert -1 <= r["val_scaled_acc"] <= 1 and 0 <= r["val_acc"] <= 1
        assert sorted(k for k in r if k.startswith("val_scaled_acc/")) == sorted(
            f"val_scaled_acc/{b}" for b in buckets
        )
        # Equal-sized buckets: the overall figure is their mean.
        per = [r[f"val_scaled_acc/{b}"] for b in buckets]
        assert r["val_scaled_acc"] == pytest.approx(np.mean(per))
    assert (tmp_path / "accuracy_vs_length.png").stat().st_size > 0
    assert "val_scaled_acc" in proc.stdout and "synthetic:" in proc.stdout
