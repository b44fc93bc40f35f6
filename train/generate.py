"""``python -m train.generate``: continue a prompt with a training run's model, or with a
pretrained checkpoint folder of the xLSTM-7B family.

    python -m train.generate --workdir runs/xlstm_tiny --prompt "def main(" \
        --max-new-tokens 200 --temperature 0.8 --top-k 40
    python -m train.generate --pretrained /models/xLSTM-7b --prompt "The capital of" \
        --temperature 0 --dtype bfloat16

Loads the run's config, tokenizer and latest checkpoint's parameters (``train.runs``) or
the folder's (``xlstm_jax.load_pretrained``, with its ``tokenizer.json`` unless ``--tokenizer``),
prefills the prompt (chunkwise) and decodes token by token with constant cost per token,
streaming the text. The library function is ``xlstm_jax.generate``.

Exit codes: 0 done, 2 a bad argument or a folder that is not a run (no traceback),
1 no checkpoint that can be read (``--debug`` shows tracebacks).
"""

from __future__ import annotations

import argparse
import sys
import time

from train.cli import make_parser
from train.errors import run_command

__all__ = ["main"]

_STARTED = time.perf_counter()  # start-up is counted from here (imports included)


def _stream(
    model, prompt_ids, max_new_tokens, *, temperature, top_k, top_p, eos_id, rng, write
) -> tuple[list[int], float, float]:
    """Greedy/sampled continuation of one prompt by ``xlstm_jax.generate`` (the library's
    decode loop), handing the ids to ``write`` as they grow.

    Returns (ids, seconds to compile, prefill and pick the first token, seconds of decoding
    after it).
    """
    from xlstm_jax import generate

    out: list[int] = []
    first = []

    def on_token(tokens, emitted):
        if not first:
            first.append(time.perf_counter())
        out.append(int(tokens[0]))
        write(out)

    t0 = time.perf_counter()
    generate(
        model,
        [prompt_ids],
        max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        eos_id=eos_id,
        rng=rng,
        on_token=on_token,
    )
    t_end = time.perf_counter()
    t1 = first[0] if first else t_end
    return out, t1 - t0, t_end - t1


def _parser() -> argparse.ArgumentParser:
    p = make_parser(
        "python -m train.generate",
        "Continue a prompt with the latest checkpoint of a train.main run, or with a "
        "pretrained xLSTM-7B-family folder (sampling by default; --temperature 0 for greedy).",
        [
            'python -m train.generate --workdir runs/xlstm_tiny --prompt "def main("',
            'python -m train.generate --workdir runs/xlstm_tiny --prompt "import " '
            "--temperature 0 --max-new-tokens 50",
            'python -m train.generate --pretrained /models/xLSTM-7b --prompt "Hello" '
            "--temperature 0 --dtype bfloat16",
        ],
        [
            "0 done",
            "2 a bad argument (prompt, sampling, --step, --tokenizer) or a folder that is not "
            "a run or a pretrained checkpoint: found before anything is loaded",
            "1 no checkpoint of the run reads back",
        ],
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--workdir", help="the run's folder (train.main --workdir)")
    src.add_argument(
        "--pretrained",
        metavar="FOLDER",
        help="a local xLSTM-7B-family checkpoint folder (Hugging Face: config.json + "
        "safetensors; or the reference's config.yaml + safetensors)",
    )
    p.add_argument(
        "--tokenizer",
        help="with --pretrained: a tokenizer.json or its folder, or 'bytes' (default: the "
        "checkpoint folder's tokenizer.json)",
    )
    p.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        help="with --pretrained: compute and parameter dtype (default: the stored one)",
    )
    p.add_argument("--prompt", required=True, help="text to continue")
    p.add_argument("--max-new-tokens", type=int, default=200, help="tokens to generate")
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (argmax)")
    p.add_argument(
        "--top-k", type=int, default=None, help="keep the k most likely tokens (default: all)"
    )
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass (default: off)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument(
        "--step", type=int, help="checkpoint step to load (default: the newest intact one)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Runs the CLI; returns the process exit code."""
    args = _parser().parse_args(argv)
    return run_command(lambda: _generate(args), debug=args.debug)


def _generate(args: argparse.Namespace) -> int:
    import jax

    from train.config import ConfigError
    from train.runs.load import load_run
    from xlstm_jax.generation import check_sampling_args

    flags = {
        a: "--" + a.replace("_", "-") for a in ("max_new_tokens", "temperature", "top_k", "top_p")
    }
    try:
        check_sampling_args(
            args.max_new_tokens, args.temperature, args.top_k, args.top_p, names=flags
        )
    except ValueError as e:
        raise ConfigError(str(e)) from None
    _check_prompt(args.prompt)
    if not 0 <= args.seed < 2**32:  # JAX keys keep 32 bits: a larger seed would repeat one
        raise ConfigError(f"--seed {args.seed}: give an integer in [0, 2**32).")
    if args.pretrained is None:
        for flag in ("tokenizer", "dtype"):
            if getattr(args, flag) is not None:
                raise ConfigError(f"--{flag} goes with --pretrained (a run has its own).")
        run = load_run(args.workdir, step=args.step, task="lm")
        model, tokenizer, source = run.model, run.tokenizer, f"checkpoint step {run.step}"
    else:
        if args.step is not None:
            raise ConfigError("--step goes with --workdir (a checkpoint folder has one step).")
        model, tokenizer = _load_pretrained(args)
        source = f"pretrained {args.pretrained}"
    vocab = model.config.vocab_size
    if args.top_k is not None and args.top_k > vocab:
        raise ConfigError(
            f"--top-k {args.top_k} is larger than the model's vocabulary ({vocab} tokens); "
            f"give at most {vocab}, or leave --top-k out to keep all tokens."
        )
    prompt_ids = [int(t) for t in tokenizer.encode_batch([args.prompt])[0]]
    if not prompt_ids:
        raise ConfigError("the prompt is empty after tokenization; give some text.")
    if max(prompt_ids) >= model.config.vocab_size:
        raise ConfigError(
            f"the tokenizer gives id {max(prompt_ids)}, outside the model's vocabulary "
            f"({model.config.vocab_size}); give the checkpoint's own tokenizer."
        )
    print(f"[{source}, {tokenizer.spec} tokenizer]", file=sys.stderr)
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

    t_loaded = time.perf_counter()
    ids, compile_s, decode_s = _stream(
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
    rate = f"{len(ids) / decode_s:,.1f} tokens/s" if decode_s > 0 and ids else "-"
    load_s = t_loaded - _STARTED
    print(
        f"[{len(ids)} tokens in {decode_s:.2f} s ({rate}); start-up {load_s + compile_s:.1f} s: "
        f"imports and loading the model {load_s:.1f} s, compiling and prefill {compile_s:.1f} s]",
        file=sys.stderr,
    )
    return 0


def _check_prompt(prompt: str) -> None:
    """Refuses a prompt that is not text: bytes that are not UTF-8 reach Python's argv as
    lone surrogates (``\\udcXX``), which no tokenizer or terminal can encode."""
    from train.config import ConfigError

    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as e:
        code = ord(prompt[e.start])
        what = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else "a lone surrogate"
        raise ConfigError(
            f"--prompt is not valid UTF-8 text: {what} (U+{code:04X}) at character "
            f"{e.start} is not part of a UTF-8 character. Give the prompt as UTF-8 text (check "
            f"the terminal's or the file's encoding, e.g. iconv -t UTF-8)."
        ) from None


def _load_pretrained(args: argparse.Namespace):
    """The model and tokenizer of ``--pretrained`` (errors: ``ConfigError``)."""
    from pathlib import Path

    from train.config import ConfigError
    from train.data.text.tokenizer import load_tokenizer
    from xlstm_jax import PretrainedError, load_pretrained

    folder = Path(args.pretrained)
    spec = args.tokenizer or str(folder / "tokenizer.json")
    if args.tokenizer is None and not (folder / "tokenizer.json").is_file() and folder.is_dir():
        raise ConfigError(
            f"{folder} has no tokenizer.json; give one with --tokenizer PATH (or --tokenizer "
            "bytes for a byte-level model)."
        )
    knobs = {} if args.dtype is None else {"dtype": args.dtype, "param_dtype": args.dtype}
    try:
        model = load_pretrained(folder, **knobs)
    except PretrainedError as err:
        raise ConfigError(str(err)) from None
    return model, load_tokenizer(spec, "--tokenizer" if args.tokenizer else None)


if __name__ == "__main__":
    sys.exit(main())
