"""One place that decides which implementation an op runs (``impl="auto"|"xla"|"pallas"``)."""

from __future__ import annotations

import logging

import jax

from pallas_kernels._checks import check_impl

logger = logging.getLogger("pallas_kernels")
_logged: set[tuple[str, str]] = set()

# Ops that have a Pallas kernel registered. The kernel issues add entries here.
PALLAS_OPS: dict[str, object] = {}


def _on_cuda_gpu() -> bool:
    dev = jax.devices()[0]
    return dev.platform == "gpu" and "cuda" in dev.client.platform_version.lower()


def resolve_impl(op: str, impl: str, interpret: bool) -> str:
    """Returns ``"xla"`` or ``"pallas"`` for ``op``.

    ``auto`` picks Pallas on a CUDA GPU when the op has a kernel, the XLA path otherwise,
    and logs the choice once per op. An explicit ``"pallas"`` that cannot be honoured raises.
    """
    check_impl(impl)
    has_kernel = op in PALLAS_OPS
    if impl == "xla":
        return "xla"
    if impl == "pallas":
        if not has_kernel:
            raise ValueError(
                f"impl='pallas' was requested for `{op}`, but no Pallas kernel exists for it in "
                "this version; use impl='auto' or impl='xla'."
            )
        if not (interpret or _on_cuda_gpu()):
            raise ValueError(
                f"impl='pallas' for `{op}` needs a CUDA GPU; on this machine pass "
                "interpret=True (slow, for testing) or use impl='auto'."
            )
        return "pallas"
    choice = "pallas" if has_kernel and _on_cuda_gpu() else "xla"
    if (op, choice) not in _logged:
        _logged.add((op, choice))
        logger.info("pallas_kernels.%s: impl='auto' chose the %s path", op, choice)
    return choice
