"""Stateful generation: chunkwise prefill, then a jitted constant-cost decode loop.

    from xlstm_jax import generate
    out = generate(model, [[1, 2, 3], [4, 5]], max_new_tokens=20, temperature=0.0)

The command line that samples from a training run is ``python -m train.generate``; it
streams the text through ``generate``'s ``on_token``, so both run this one loop.

The decode loop is one ``lax.while_loop`` (no Python loop per token) that stops when every
sequence is done. Prompts of different lengths are handled without padding the
recurrence: the shared prefix is prefilled in one call, then each step feeds the
sequence's own next prompt token while it has one and the sampled token afterwards, so
every sequence sees exactly its own tokens.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import io_callback


def sample_logits(
    logits: jax.Array,
    rng: jax.Array,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> jax.Array:
    """Samples token ids from ``logits`` (B, V); greedy (argmax) when temperature is 0.

    ``top_k`` keeps the k most likely tokens; ``top_p`` keeps the smallest set of most
    likely tokens whose probability reaches p (the most likely token is always kept).
    """
    if temperature == 0.0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits.astype(jnp.float32) / temperature
    neg = jnp.finfo(jnp.float32).min
    if top_k is not None:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, neg, logits)
    if top_p is not None:
        order = jnp.argsort(-logits, axis=-1)
        sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        # Keep token j if the mass strictly before it is below p.
        keep_sorted = (jnp.cumsum(probs, axis=-1) - probs) < top_p
        keep = (
            jnp.zeros_like(keep_sorted)
            .at[jnp.arange(logits.shape[0])[:, None], order]
            .set(keep_sorted)
        )
        logits = jnp.where(keep, logits, neg)
    return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


# The most tokens one ``generate`` call decodes (hours of decoding for a large model).
MAX_NEW_TOKENS = 1 << 20


def check_sampling_args(max_new_tokens, temperature, top_k, top_p, names=None) -> None:
    """Raises ``ValueError`` naming the argument when a sampling setting is invalid.

    ``names`` maps an argument to the name the message uses (a command line passes its
    flags, e.g. ``{"top_p": "--top-p"}``); by default the Python argument is named.
    """
    names = names or {}

    def bad(arg: str, value, need: str) -> ValueError:
        return ValueError(f"{names.get(arg, f'`{arg}`')} {value!r}: {need}.")

    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise bad("max_new_tokens", max_new_tokens, "give an integer >= 1")
    if max_new_tokens > MAX_NEW_TOKENS:
        # Refused rather than started: one decode step per token, and a (B, max_new_tokens)
        # int32 output buffer allocated up front (8 GB per prompt for 2e9) would be a hang.
        raise bad(
            "max_new_tokens",
            max_new_tokens,
            f"give at most {MAX_NEW_TOKENS} per call (one decode step per token, and the "
            f"output alone would take {4 * max_new_tokens / 2**30:.1f} GiB per prompt); for "
            f"longer text, call again with the output as the prompt",
        )
    if not temperature >= 0 or temperature == float("inf"):  # NaN fails the comparison
        raise bad("temperature", temperature, "give a finite number >= 0 (0 = greedy)")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise bad("top_k", top_k, "give a positive integer, or None for all tokens")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise bad("top_p", top_p, "give a number in (0, 1], or None for no cut")


def _pack_prompts(prompt_tokens) -> tuple[np.ndarray, np.ndarray]:
    """(B, P) right-padded prompt array and the lengths (B,)."""
    if isinstance(prompt_tokens, (np.ndarray, jax.Array)):
        arr = np.asarray(prompt_tokens)
        if arr.ndim == 1:
            arr = arr[None]
        if arr.ndim != 2 or arr.shape[1] == 0:
            raise ValueError(f"`prompt_tokens` must be (B, P) with P >= 1; got {arr.shape}.")
        return arr.astype(np.int32), np.full((arr.shape[0],), arr.shape[1], np.int32)
    seqs = [list(map(int, s)) for s in prompt_tokens]
    if not seqs or any(len(s) == 0 for s in seqs):
        raise ValueError("`prompt_tokens` must hold at least one non-empty prompt.")
    lengths = np.array([len(s) for s in seqs], np.int32)
    arr = np.zeros((len(seqs), lengths.max()), np.int32)
    for b, s in enumerate(seqs):
        arr[b, : len(s)] = s
    return arr, lengths


@partial(
    jax.jit,
    static_argnames=(
        "graphdef",
        "num_steps",
        "max_new_tokens",
        "temperature",
        "top_k",
        "top_p",
        "prefill_len",
        "on_token",
    ),
)
def _generate(
    graphdef,
    params,
    prompts,
    lengths,
    rng,
    eos_id,
    *,
    prefill_len,
    num_steps,
    max_new_tokens,
    temperature,
    top_k,
    top_p,
    on_token,
):
    model = nnx.merge(graphdef, params)
    B, P = prompts.shape
    logits, state = model.with_state(prompts[:, :prefill_len], model.init_state(B))
    end = prefill_len + num_steps

    def unfinished(carry):
        t, n_out, done = carry[0], carry[5], carry[6]
        return (t < end) & jnp.any(~done & (n_out < max_new_tokens))

    def step(carry):
        # t: position of the token chosen in this step.
        t, state, last, rng, out, n_out, done = carry
        rng, sub = jax.random.split(rng)
        sampled = sample_logits(last, sub, temperature=temperature, top_k=top_k, top_p=top_p)
        in_prompt = t < lengths
        token = jnp.where(in_prompt, prompts[:, jnp.minimum(t, P - 1)], sampled)
        generating = ~in_prompt & (n_out < max_new_tokens) & ~done
        rows, col = jnp.arange(B), jnp.minimum(n_out, max_new_tokens - 1)
        out = out.at[rows, col].set(jnp.where(generating, token, out[rows, col]))
        n_out = n_out + generating.astype(jnp.int32)
        ends = generating & (token == eos_id)
        done = done | ends
        if on_token is not None:
            io_callback(_call_on_token(on_token), None, token, generating & ~ends, ordered=True)
        logits, state = nnx.merge(graphdef, params).with_state(token[:, None], state)
        return (t + 1, state, logits[:, 0], rng, out, n_out, done)

    fill = jnp.where(eos_id >= 0, eos_id, 0)
    out = jnp.full((B, max_new_tokens), fill, jnp.int32)
    zeros = jnp.zeros((B,), jnp.int32)
    init = (jnp.asarray(prefill_len), state, logits[:, -1], rng, out, zeros, zeros.astype(bool))
    # Stops once every row has its tokens (or its EOS): no steps are spent after that.
    carry = jax.lax.while_loop(unfinished, step, init)
    return carry[4], carry[5]


@functools.cache
def _call_on_token(on_token: Callable) -> Callable:
    """``on_token`` called only for steps that emit a token (host side of the callback)."""

    def call(token, emitted):
        emitted = np.asarray(emitted)
        if emitted.any():
            on_token(np.asarray(token), emitted)

    return call


def generate(
    model,
    prompt_tokens: Sequence[Sequence[int]] | np.ndarray | jax.Array,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    rng: jax.Array | int | None = None,
    on_token: Callable[[np.ndarray, np.ndarray], None] | None = None,
) -> np.ndarray:
    """Generates ``max_new_tokens`` tokens after each prompt.

    Args:
      model: an ``xLSTMLMModel``.
      prompt_tokens: a list of prompts (lists of ids, lengths may differ) or a (B, P) array.
      max_new_tokens: tokens to generate per prompt (at most ``MAX_NEW_TOKENS``).
      temperature: 0 for greedy decoding; otherwise logits are divided by it.
      top_k, top_p: optional top-k / nucleus filtering.
      eos_id: stop a sequence after it emits this id; the rest of its row is ``eos_id``.
        Decoding ends when every sequence has stopped or has its tokens.
      rng: a PRNG key or an integer seed (default seed 0).
      on_token: streaming: ``on_token(tokens (B,) int32, emitted (B,) bool)`` is called
        on the host after each decode step in which a sequence emitted a token (an
        ``eos_id`` that ends a sequence is not passed), in order, while the loop runs.
        It is part of the compiled program: pass the same function to reuse it.

    Returns:
      (B, max_new_tokens) int32 NumPy array of generated ids.
    """
    check_sampling_args(max_new_tokens, temperature, top_k, top_p)
    prompts, lengths = _pack_prompts(prompt_tokens)
    vocab = model.config.vocab_size
    if prompts.min() < 0 or prompts.max() >= vocab:
        raise ValueError(f"prompt token ids must lie in [0, vocab_size={vocab}).")
    if top_k is not None and top_k > vocab:
        raise ValueError(f"`top_k` {top_k}: give at most the vocabulary size, {vocab}.")
    if rng is None or isinstance(rng, int):
        rng = jax.random.key(0 if rng is None else rng)
    prefill_len = int(lengths.min())
    num_steps = int(lengths.max()) - prefill_len + max_new_tokens
    graphdef, params = nnx.split(model)
    out, _ = _generate(
        graphdef,
        params,
        jnp.asarray(prompts),
        jnp.asarray(lengths),
        rng,
        jnp.asarray(-1 if eos_id is None else eos_id, jnp.int32),
        prefill_len=prefill_len,
        num_steps=num_steps,
        max_new_tokens=max_new_tokens,
        temperature=float(temperature),
        top_k=top_k,
        top_p=top_p,
        on_token=on_token,
    )
    return np.asarray(out)
