"""Helpers shared by the test modules (imported as ``helpers``; no test module imports
another): the tolerance table, error measures, the PyTorch-reference guard, the kernel-test
modes and the CUDA cross-lowering inspection."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels.dispatch import on_cuda_gpu

# Parity tests must not silently skip in CI: there, a missing torch/xlstm is an error,
# except in a CI leg that declares it runs without the reference (XLSTM_JAX_NO_REFERENCE=1,
# the Python 3.12 legs: the CPU torch build is for Python 3.11 only).
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
NO_REFERENCE = os.environ.get("XLSTM_JAX_NO_REFERENCE", "") == "1"

# Tolerances keyed by dtype: (atol, rtol). Never loosened to make a test pass.
TOL = {
    "float64": (1e-10, 1e-10),
    "float32": (1e-5, 1e-5),
    "bfloat16": (2e-2, 2e-2),
}


def rel_err(a, b) -> float:
    """||a - b|| / ||b|| (norm-relative error)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def require_reference(module_level: bool = False):
    """Imports torch and xlstm; skips (the test, or the whole module when called at module
    level) where they are missing, but fails in CI."""
    try:
        import torch
        import xlstm
    except ImportError as err:  # pragma: no cover - depends on the environment
        if IN_CI and not NO_REFERENCE:
            raise RuntimeError("torch/xlstm are required in CI (pip install -e '.[test]')") from err
        pytest.skip(f"PyTorch reference not installed: {err}", allow_module_level=module_level)
    return torch, xlstm


def require_transformers(module_level: bool = False):
    """Imports transformers (the test extra); skips (the test, or the whole module when
    called at module level) where it is missing, but fails in CI."""
    try:
        import transformers
    except ImportError as err:  # pragma: no cover - depends on the environment
        if IN_CI and not NO_REFERENCE:
            raise RuntimeError("transformers is required in CI (pip install -e '.[test]')") from err
        pytest.skip(f"transformers not installed: {err}", allow_module_level=module_level)
    return transformers


# Each kernel check runs interpreted on CPU, and compiled where a CUDA GPU is present.
MODES = [
    pytest.param(True, id="interpret"),
    pytest.param(
        False,
        id="compiled",
        marks=pytest.mark.skipif(not on_cuda_gpu(), reason="compiled Pallas needs a CUDA GPU"),
    ),
]


# Cross-lowering targets: the GPU each names stands in for the device the Triton lowering
# asks for (its compute capability); sm_90 is the H100/H200 we measure on.
CUDA_TARGETS = {"sm_90": "NVIDIA H100 80GB HBM3", "sm_80": "NVIDIA A100-SXM4-80GB"}


def lower_for_cuda(fn, *args, target: str = "sm_90"):
    """``jax.jit(fn)`` lowered for CUDA from this machine: the real Pallas -> Triton lowering
    a GPU runs, for the GPU of ``target`` (a key of ``CUDA_TARGETS``).

    From JAX 0.11 on, lowering a Triton kernel without a GPU needs an abstract device (the
    lowering reads the compute capability from it); an abstract mesh carries one. JAX 0.10
    accepts it too (and otherwise targets sm_90 silently).
    """
    device = jax.sharding.AbstractDevice(
        device_kind=CUDA_TARGETS[target], num_cores=None, platform="gpu"
    )
    # Auto axes: a one-device mesh that only names the target, no sharding in types.
    axis_types = (jax.sharding.AxisType.Auto,)
    mesh = jax.sharding.AbstractMesh((1,), ("_device",), axis_types, abstract_device=device)
    with jax.sharding.use_abstract_mesh(mesh):
        return jax.jit(fn).trace(*args).lower(lowering_platforms=("cuda",))


def triton_calls(lowered) -> list[str]:
    """The names of the Triton kernels inside a lowered program, each module parsed and
    MLIR-verified."""
    from jax._src.interpreters import mlir
    from jax._src.lib.mlir import ir
    from jax._src.lib.triton import dialect as tt_dialect

    found = []

    def walk(op):
        for region in op.regions:
            for block in region.blocks:
                for child in block.operations:
                    child = child.operation
                    if child.name == "stablehlo.custom_call" and "triton" in str(
                        child.attributes["call_target_name"]
                    ):
                        found.append(child.attributes["mhlo.backend_config"])
                    walk(child)

    walk(lowered.compiler_ir("stablehlo").operation)
    names = []
    for cfg in found:
        ctx = ir.Context()
        ctx.append_dialect_registry(mlir.upstream_dialects)
        tt_dialect.register_dialect(ctx)
        ctx.load_all_available_dialects()
        with ctx:
            module = ir.Module.parse(cfg["ir"].value_bytes)
            assert module.operation.verify()
        names.append(cfg["name"].value)
    return names


# --- Small models shared by the model, generation and parity tests (the library is
# imported lazily: the kernel tests run with JAX alone). ---


def mixed_config(**kw):
    from xlstm_jax import (
        mLSTMBlockConfig,
        mLSTMLayerConfig,
        sLSTMBlockConfig,
        sLSTMLayerConfig,
        xLSTMLMModelConfig,
    )

    base = dict(
        mlstm_block=mLSTMBlockConfig(mlstm=mLSTMLayerConfig(num_heads=2, chunk_size=8)),
        slstm_block=sLSTMBlockConfig(slstm=sLSTMLayerConfig(num_heads=2)),
        num_blocks=3,
        slstm_at=(1,),
        embedding_dim=32,
        vocab_size=61,
    )
    base.update(kw)
    return xLSTMLMModelConfig(**base)


def perturbed_model(cfg, seed=0, scale=0.2):
    """A model with every weight moved off its initial value (zeros included)."""
    return _perturbed_jit()(cfg, seed, scale)


@functools.cache
def _perturbed_jit():
    from flax import nnx

    return nnx.jit(_perturbed, static_argnums=(0, 1, 2))


def _perturbed(cfg, seed, scale):
    """The model of ``cfg`` (either family) with every parameter moved by N(0, scale^2)."""
    from flax import nnx

    from xlstm_jax import xLSTMLarge, xLSTMLargeConfig, xLSTMLMModel

    cls = xLSTMLarge if isinstance(cfg, xLSTMLargeConfig) else xLSTMLMModel
    model = cls(cfg, rngs=nnx.Rngs(seed))
    state = nnx.state(model, nnx.Param)
    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    leaves = [
        x + scale * jax.random.normal(k, x.shape, x.dtype)
        for x, k in zip(leaves, keys, strict=True)
    ]
    nnx.update(model, jax.tree.unflatten(treedef, leaves))
    return model


def tokens(B, S, V, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(0, V, (B, S)), jnp.int32)


def torch_reference_config(xlstm, E=32, num_blocks=3, slstm_at=(1,), V=61, ctx=64, **kw):
    return xlstm.xLSTMLMModelConfig(
        mlstm_block=xlstm.mLSTMBlockConfig(mlstm=xlstm.mLSTMLayerConfig(num_heads=2)),
        slstm_block=xlstm.sLSTMBlockConfig(
            slstm=xlstm.sLSTMLayerConfig(backend="vanilla", num_heads=2),
            feedforward=xlstm.FeedForwardConfig(),
        ),
        context_length=ctx,
        num_blocks=num_blocks,
        embedding_dim=E,
        slstm_at=list(slstm_at),
        vocab_size=V,
        **kw,
    )


# --- The training CLI as a user runs it (subprocesses on a shrunken xlstm_tiny) ---------

REPO_ROOT = Path(__file__).resolve().parents[1]
# Small enough for ~0.1 s per step on a 2-core CPU, big enough for the loss to fall.
TINY_TRAIN = [
    "model.embedding_dim=64",
    "model.num_blocks=2",
    "model.slstm_at=[1]",
    "data.seq_len=32",
    "train.batch_size=8",
    "train.steps=30",
    "train.eval_every=15",
    "train.eval_batches=2",
    "schedule.warmup_steps=5",
    "logging.every=1",
    "checkpoint.every=10",
]


def cli_env() -> dict:
    """The environment of a CLI subprocess: CPU, offline. It inherits the test session's
    compilation cache (conftest.py), so only the first run compiles the train step."""
    return {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "HF_HUB_OFFLINE": "1",
    }


def train_cmd(workdir: Path, *overrides: str, config: str = "xlstm_tiny", flags=()) -> list[str]:
    """``python -m train.main`` on the tiny setup with ``overrides`` after it."""
    return [
        sys.executable,
        "-m",
        "train.main",
        "--config",
        config,
        "--workdir",
        str(workdir),
        *flags,
        "--set",
        *TINY_TRAIN,
        *overrides,
    ]


def run_cmd(cmd: list[str], env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def metrics_of(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def checkpoints_of(workdir: Path) -> list[int]:
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def require_tirex():
    """Imports torch and ``tirex`` (tirex-ts, the test extra: a test oracle only); skips
    where they are missing, fails in CI."""
    try:
        import tirex
        import torch
    except ImportError as err:  # pragma: no cover - depends on the environment
        if IN_CI and not NO_REFERENCE:
            raise RuntimeError(
                "torch/tirex-ts are required in CI (pip install -e '.[test]')"
            ) from err
        pytest.skip(f"tirex-ts (PyTorch reference) not installed: {err}")
    return torch, tirex


def require_tirex2():
    """Imports torch and ``tirex2`` (PyPI tirex-2, Apache-2.0, the test extra; it runs on
    flashrnn and mlstm_kernels, the latter a test oracle only); skips where they are
    missing, fails in CI."""
    try:
        import tirex2
        import torch
    except ImportError as err:  # pragma: no cover - depends on the environment
        if IN_CI and not NO_REFERENCE:
            raise RuntimeError(
                "torch/tirex-2 are required in CI (pip install -e '.[test]')"
            ) from err
        pytest.skip(f"tirex-2 (PyTorch reference) not installed: {err}")
    return torch, tirex2


# --- Jitted model calls: an eager NNX call runs op by op, several times slower on CPU than
# one compiled program. One jit each for all modules, so that models of equal configs and
# token shapes reuse the compiled program across tests.


def jit_call(model, *args):
    """``model(*args)`` under ``nnx.jit``."""
    return _model_jits()[0](model, *args)


def jit_with_state(model, tokens, state):
    """``model.with_state(tokens, state)`` under ``nnx.jit``."""
    return _model_jits()[1](model, tokens, state)


@functools.cache
def _model_jits():
    from flax import nnx

    return nnx.jit(lambda m, *args: m(*args)), nnx.jit(lambda m, t, s: m.with_state(t, s))


def with_weights_of(model, cfg):
    """The model of ``cfg`` holding ``model``'s state (its weights): for configs that change
    only the computation (remat). Built abstractly, so no initialisation is run or compiled
    for weights that are replaced anyway."""
    from flax import nnx

    abstract = nnx.eval_shape(lambda: type(model)(cfg, rngs=nnx.Rngs(0)))
    return nnx.merge(nnx.graphdef(abstract), nnx.state(model))


# --- fuzzing readers of untrusted files ------------------------------------------------------

# How many mutations each fuzz test tries, from a fixed seed so that CI sees the same files
# every run (tests/test_format_fuzz.py and the *_fuzz.py modules); raise them to search more.
FUZZ_COUNT = int(os.environ.get("XLSTM_JAX_FUZZ_COUNT", "40"))
FUZZ_SEED = int(os.environ.get("XLSTM_JAX_FUZZ_SEED", "29"))


class HungError(Exception):
    """A read under ``deadline`` took too long."""


@contextlib.contextmanager
def deadline(seconds: float):
    """Fails a read that takes longer than ``seconds`` (a hang), where the OS offers a timer."""
    if not hasattr(signal, "setitimer"):  # pragma: no cover - Windows
        yield
        return

    def hung(*_):
        raise HungError(f"a read took more than {seconds} s")

    old = signal.signal(signal.SIGALRM, hung)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def mutate_bytes(rng, data: bytes) -> bytes:
    """``data`` damaged one random way: truncated, a bit flipped, a span overwritten with
    random bytes, a NUL or a byte that is not UTF-8 inserted, a span deleted or repeated."""
    data = bytearray(data)
    at = rng.randrange(max(len(data), 1))
    kind = rng.randrange(6)
    if kind == 0:
        return bytes(data[:at])
    if kind == 1 and data:
        data[at] ^= 1 << rng.randrange(8)
    elif kind == 2:
        n = rng.randint(1, 16)
        data[at : at + n] = bytes(rng.randrange(256) for _ in range(n))
    elif kind == 3:
        data[at:at] = rng.choice([b"\0", b"\xff", b"\xc3", b"\xed\xa0\x80", b"\r", b'"'])
    elif kind == 4:
        del data[at : at + rng.randint(1, 32)]
    else:
        n = rng.randint(1, 64)
        data[at:at] = data[at : at + n] * rng.randint(2, 5)
    return bytes(data)


# Values of every wrong kind: the other JSON types, out-of-range and non-finite numbers,
# deep nesting, text that looks like a number.
HOSTILE_VALUES = [
    None,
    True,
    0,
    -1,
    2**62,
    2**64,
    -(2**70),
    1.5,
    1e308,
    float("nan"),
    float("inf"),
    "",
    "x",
    "3",
    "../../etc/passwd",
    [],
    [1, "a"],
    [[[[[]]]]],
    {},
    {"a": 1},
    {"embedding_dim": "x"},
]


def _paths(tree, prefix=()):
    """Every key path of a JSON tree (dict keys and list indices)."""
    yield prefix
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from _paths(v, (*prefix, i))


def put_json(tree, path, value):
    """``tree`` (a copy) with the value at ``path`` replaced (or the key removed, for
    ``REMOVE``)."""
    tree = json.loads(json.dumps(tree))
    if not path:
        return {} if value is REMOVE else value
    node = tree
    for p in path[:-1]:
        node = node[p]
    if value is REMOVE and isinstance(node, dict):
        del node[path[-1]]
    else:
        node[path[-1]] = None if value is REMOVE else value
    return tree


REMOVE = object()


def mutate_json(rng, tree) -> bytes:
    """A JSON file made from ``tree``: its bytes damaged, or a hostile value (or a removed
    key, or a key given twice) at a random place."""
    text = json.dumps(tree, indent=1).encode()
    kind = rng.randrange(4)
    if kind == 0:
        return mutate_bytes(rng, text)
    if kind == 3:  # a key given twice, the second time with another value
        return text.replace(b"{", b'{"name": 1, "name": 2,', 1)
    path = rng.choice(list(_paths(tree)))
    value = REMOVE if kind == 2 else rng.choice(HOSTILE_VALUES)
    return json.dumps(put_json(tree, path, value)).encode()  # NaN and Infinity written as such


def tirex2_kwargs(
    recipe: tuple[str, ...] = ("bi-slstm",),
    *,
    E: int = 16,
    heads: int = 2,
    slstm_heads: int | None = None,
    P: int = 4,
    ctx: int = 32,
    fut: int = 8,
    **top,
) -> dict:
    """A tiny TiRex-2's ``config.json`` (the reference's keyword arguments): one template
    per time mixer kind of ``recipe``, blocks in that order; ``top`` sets or overrides
    top-level fields (``tta_diff``, ``input_ff_dim``, ...)."""
    kinds = list(dict.fromkeys(recipe))
    extra = {} if slstm_heads is None else {"num_slstm_heads": slstm_heads}
    templates = {
        k: {
            "time_mixer": {"model_type": k, "embedding_dim": E, "num_heads": heads}
            | (extra if k == "bi-slstm" else {}),
            "variate_mixer": {"embedding_dim": E, "num_heads": heads},
            "dropout": 0.0,
            "eps": 1e-7,
        }
        for k in kinds
    }
    return {
        "stack_config": {"templates": templates, "recipe": list(recipe)},
        "num_blocks": len(recipe),
        "embedding_dim": E,
        "input_patch_size": P,
        "output_patch_size": P,
        "quantiles": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
        "context_len": ctx,
        "future_len": fut,
        "input_ff_dim": 16,
        "tokenizer_cfg": {"input_patch_size": P, "output_patch_size": P, "input_patch_stride": P},
        "scaler_cfg": {"eps": 1e-8, "use_arcsinh": True, "binaryaware": True},
        "h_expand": 2.0,
        "act_func": "SiLU",
        "dropout": 0.0,
        **top,
    }


def sweep(cases, keep, ids=None) -> list:
    """``cases`` as pytest params, those whose index is not in ``keep`` marked
    ``kernel_sweep`` (CI runs them on the GPU machine's JAX only; ``keep`` on every JAX)."""
    ids = ids or [None] * len(cases)
    marks = [pytest.mark.kernel_sweep]
    return [
        pytest.param(c, id=i, marks=() if n in keep else marks)
        for n, (c, i) in enumerate(zip(cases, ids, strict=True))
    ]


def xla_flags(devices: int) -> str:
    """``XLA_FLAGS`` for a subprocess with ``devices`` simulated CPU devices, keeping this
    process's other flags (the suite's quick compile, ``conftest.py``)."""
    keep = [f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f]
    return " ".join([*keep, f"--xla_force_host_platform_device_count={devices}"])
