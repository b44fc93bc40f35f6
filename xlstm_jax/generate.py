"""``python -m xlstm_jax.generate``: continue a prompt with a training run's model.

    python -m xlstm_jax.generate --workdir runs/xlstm_tiny --prompt "def main(" \
        --max-new-tokens 200 --temperature 0.8 --top-k 40

Loads the run's config, tokenizer and latest checkpoint, prefills the prompt (chunkwise)
and decodes token by token with constant cost per token, streaming the text. The library
function is ``xlstm_jax.generate`` (``xlstm_jax/generation.py``).
"""

from __future__ import annotations

import sys
import types

import jax
import jax.numpy as jnp
from flax import nnx

from xlstm_jax.generation import _check_args, generate, sample_logits


def _load_run(workdir):
    """(model, tokenizer, step) from a ``train.main`` run directory.

    The command line is the one place the library reads the trainer's files (config,
    checkpoint, tokenizer), so ``train`` is imported here, lazily, not at module level.
    """
    import json
    from pathlib import Path

    from train.checkpoint import Checkpointer
    from train.config import ExperimentConfig, from_dict, to_dict
    from train.optimizer import decay_mask, make_optimizer, make_schedule
    from train.tokenizer import load_tokenizer
    from xlstm_jax.model import xLSTMLMModel

    workdir = Path(workdir)
    cfg_path = workdir / "config.json"
    if not cfg_path.is_file():
        raise SystemExit(
            f"error: {workdir} is not a training run (no config.json); train one first, e.g. "
            f"python -m train.main --config xlstm_tiny --workdir {workdir}"
        )
    cfg = from_dict(ExperimentConfig, json.loads(cfg_path.read_text()))
    ckpt = Checkpointer(workdir / "checkpoints", keep=cfg.checkpoint.keep, async_save=False)
    step = ckpt.latest_step()
    if step is None:
        ckpt.close()
        raise SystemExit(
            f"error: {workdir / 'checkpoints'} holds no checkpoint yet; train first (rerun "
            f"python -m train.main --config {cfg.name} --workdir {workdir}) and try again."
        )
    tokenizer = load_tokenizer(cfg.data.tokenizer)
    abstract = nnx.eval_shape(lambda: xLSTMLMModel(cfg.model, rngs=nnx.Rngs(0)))
    graphdef, param_state, rest = nnx.split(abstract, nnx.Param, ...)
    params = nnx.to_pure_dict(param_state)
    # The checkpoint holds the optimizer state too: restore into the same structure.
    tx = make_optimizer(
        cfg.optimizer,
        make_schedule(cfg.optimizer, cfg.schedule, 1),
        decay_mask(params, cfg.model.weight_decay_on_embedding),
    )
    abstract_state = {"params": params, "opt_state": jax.eval_shape(tx.init, params)}
    state, _ = ckpt.restore(step, abstract_state, to_dict(cfg.model))
    ckpt.close()
    nnx.replace_by_pure_dict(param_state, state["params"])
    model = nnx.merge(graphdef, param_state, rest)
    return model, tokenizer, step


def _stream(
    model, prompt_ids, max_new_tokens, *, temperature, top_k, top_p, eos_id, rng, write
) -> list[int]:
    """Greedy/sampled continuation of one prompt, handing text to ``write`` as it grows."""
    graphdef, params = nnx.split(model)

    @jax.jit
    def prefill(params, tokens):
        m = nnx.merge(graphdef, params)
        logits, state = m(tokens, state=m.init_state(1), return_state=True)
        return logits[:, -1], state

    @jax.jit
    def step(params, token, state, key):
        m = nnx.merge(graphdef, params)
        logits, state = m(token[:, None], state=state, return_state=True)
        return logits[:, 0], state

    def pick(last, key):
        return sample_logits(last, key, temperature=temperature, top_k=top_k, top_p=top_p)

    pick = jax.jit(pick)
    last, state = prefill(params, jnp.asarray([prompt_ids], jnp.int32))
    out: list[int] = []
    for _ in range(max_new_tokens):
        rng, sub = jax.random.split(rng)
        token = pick(last, sub)
        tok = int(token[0])
        if eos_id is not None and tok == eos_id:
            break
        out.append(tok)
        write(out)
        last, state = step(params, token, state, sub)
    return out


def main(argv=None) -> int:
    """``python -m xlstm_jax.generate``: continue a prompt with a trained run's model."""
    import argparse
    import sys

    p = argparse.ArgumentParser(
        prog="python -m xlstm_jax.generate",
        description="Generate text with the latest checkpoint of a train.main run.",
    )
    p.add_argument("--workdir", required=True, help="the run's folder (train.main --workdir)")
    p.add_argument("--prompt", required=True, help="text to continue")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    _check_args(args.max_new_tokens, args.temperature, args.top_k, args.top_p)
    model, tokenizer, step = _load_run(args.workdir)
    prompt_ids = [int(t) for t in tokenizer.encode_batch([args.prompt])[0]]
    if not prompt_ids:
        raise SystemExit("error: the prompt is empty after tokenization; give some text.")
    print(f"[checkpoint step {step}, {tokenizer.spec} tokenizer]", file=sys.stderr)
    sys.stdout.write(args.prompt)
    shown = [""]

    def write(ids):
        text = tokenizer.decode(ids)
        # Hold back a trailing partial UTF-8 sequence until its last byte arrives.
        stable = text.rstrip("\ufffd")
        if len(stable) > len(shown[0]):
            sys.stdout.write(stable[len(shown[0]) :])
            sys.stdout.flush()
            shown[0] = stable

    ids = _stream(
        model,
        prompt_ids,
        args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        eos_id=tokenizer.eos_id,
        rng=jax.random.key(args.seed),
        write=write,
    )
    final = tokenizer.decode(ids)
    sys.stdout.write(final[len(shown[0]) :] + "\n")
    return 0


class _CallableModule(types.ModuleType):
    """Importing this submodule rebinds the package attribute ``xlstm_jax.generate`` from
    the function to the module; calling the module keeps ``xlstm_jax.generate(...)``
    working either way."""

    def __call__(self, *args, **kwargs):
        return generate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    raise SystemExit(main())
