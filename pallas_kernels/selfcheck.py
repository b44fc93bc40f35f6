"""The check ``impl="auto"`` runs before it first uses a kernel configuration on a GPU.

A kernel that has never run on the machine at hand can fail to compile, exhaust shared
memory, or compute wrong numbers. Before ``auto`` first picks the Pallas kernel for a
configuration (op, dtype, padded head dims, chunk size, block sizes: the ``Probe.key``), it
runs the kernel once on a small random input of that configuration, forward and backward,
and compares outputs and gradients with the XLA path at the dtype's tolerance. Any
failure (an exception while compiling or running, a non-finite value, a mismatch) logs
one warning naming the configuration and the reason, and ``auto`` uses XLA for it. The
verdict is cached for the process. An explicit ``impl="pallas"`` never runs this check
and never falls back: it raises the kernel's own error.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

logger = logging.getLogger("pallas_kernels")

# Norm-relative error bounds of the kernels against the XLA path, outputs and gradients:
# fp32 operands run full-precision dots; 16-bit operands bf16/fp16 MMA.
BOUNDS = {"float32": 1e-4, "bfloat16": 3e-2, "float16": 3e-2}


@dataclasses.dataclass(frozen=True)
class Probe:
    """A small input with the kernel configuration of a call.

    Attributes:
      key: the configuration (hashable; shown in the warning).
      inputs: builds the small random positional arguments of the implementations.
      kwargs: their static keyword arguments (``chunk_size``, ``eps``, ``function``).
      dtype: the dtype whose tolerance applies (the matmul operands').
    """

    key: tuple
    inputs: Callable[[], tuple]
    kwargs: dict
    dtype: str


@dataclasses.dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str


_VERDICTS: dict[tuple, Verdict] = {}


def _grad_check(fn: Callable, args: tuple, kwargs: dict):
    """Outputs and the gradients w.r.t. every float input of a fixed random linear loss
    of all outputs (so every output and every input's cotangent path is exercised)."""

    def loss(*a):
        out = fn(*a, **kwargs)
        leaves = jax.tree.leaves(out)
        keys = jax.random.split(jax.random.key(7), len(leaves))
        total = sum(
            jnp.sum(x.astype(jnp.float32) * jax.random.normal(k, x.shape))
            for x, k in zip(leaves, keys, strict=True)
        )
        return total, out

    grads, out = jax.jit(jax.grad(loss, argnums=tuple(range(len(args))), has_aux=True))(*args)
    return jax.tree.leaves(out), jax.tree.leaves(grads)


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def _judge(pallas: Callable, xla: Callable, probe: Probe) -> Verdict:
    """Runs the check in a thread of its own: JAX's trace state and mesh context are
    per thread, so the check compiles and runs for real even while the calling thread is
    tracing a jitted (possibly sharded) model."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(_run_check, pallas, xla, probe).result()


def _run_check(pallas: Callable, xla: Callable, probe: Probe) -> Verdict:
    bound = BOUNDS.get(probe.dtype, 3e-2)
    try:
        args = probe.inputs()
        want = jax.device_get(_grad_check(xla, args, probe.kwargs))
        got = jax.device_get(_grad_check(pallas, args, probe.kwargs))
    except Exception as e:  # noqa: BLE001 - any failure means "do not use this kernel"
        first = (str(e).strip().splitlines() or [""])[0][:300]
        return Verdict(False, f"{type(e).__name__}: {first}")
    for kind, g, w in (("output", got[0], want[0]), ("gradient", got[1], want[1])):
        for n, (a, b) in enumerate(zip(g, w, strict=True)):
            if a.shape != b.shape:
                return Verdict(False, f"{kind} {n} has shape {a.shape}, expected {b.shape}")
            if not np.all(np.isfinite(np.asarray(a, np.float64))):
                return Verdict(False, f"{kind} {n} is not finite")
            err = _rel(a, b)
            if err > bound:
                return Verdict(False, f"{kind} {n} differs from XLA by {err:.2e} (bound {bound:g})")
    return Verdict(True, "matches XLA")


def verify(op: str, pallas: Callable, xla: Callable, probe: Probe, impl: str = "pallas") -> bool:
    """Whether ``auto`` may use the kernel ``pallas`` (of implementation ``impl``, "pallas"
    or "mosaic") for ``probe``'s configuration; runs the check the first time a
    configuration is seen (later calls read the cache)."""
    key = (op, *probe.key) if impl == "pallas" else (op, impl, *probe.key)
    verdict = _VERDICTS.get(key)
    if verdict is None:
        verdict = _VERDICTS[key] = _judge(pallas, xla, probe)
        kind = "Pallas" if impl == "pallas" else "Mosaic GPU"
        if verdict.ok:
            logger.info("pallas_kernels.%s: the %s kernel passed its check for %s", op, kind, key)
        elif impl == "pallas":
            logger.warning(
                "pallas_kernels.%s: impl='auto' uses XLA for %s: the Pallas kernel failed its "
                "check (%s). Pass impl='pallas' to see the error, impl='xla' to silence this.",
                op,
                probe.key,
                verdict.reason,
            )
        else:
            logger.warning(
                "pallas_kernels.%s: impl='auto' does not use the %s kernel for %s: it failed "
                "its check (%s). Pass impl='%s' to see the error, impl='xla' to silence this.",
                op,
                kind,
                probe.key,
                verdict.reason,
                impl,
            )
    return verdict.ok


def clear() -> None:
    """Forgets every verdict (tests; a process that changed devices)."""
    _VERDICTS.clear()
