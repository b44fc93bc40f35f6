"""One place that decides which implementation an op runs
(``impl="auto"|"xla"|"pallas"|"mosaic"``).

``IMPLEMENTATIONS`` is the explicit, immutable table: op name -> {"xla": fn, "pallas": fn,
"mosaic": fn}. The XLA entry is the pure-JAX reference (the specification); a "pallas"
entry (Triton lowering) exists where a kernel does; a "mosaic" entry (Mosaic GPU lowering,
Hopper and newer, JAX >= 0.11.2) exists for ``mlstm_chunkwise``. Every entry of one op takes
the same arguments (the kernel ones also take ``interpret``, bound by ``select``).

``impl="auto"`` picks Pallas on a CUDA GPU when the op has a kernel and the kernel passed
its check for the call's configuration (``pallas_kernels.selfcheck``: once per process).
Where that check fails (or the op has no Triton kernel) and the GPU is sm_90 or newer, it
tries the Mosaic kernel the same way; XLA otherwise. It logs its choice once per op and
path. An explicit ``"pallas"`` or ``"mosaic"`` that cannot be honoured raises, and a failing
kernel raises its own error.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from types import MappingProxyType

import jax

from pallas_kernels import selfcheck
from pallas_kernels._checks import check_impl
from pallas_kernels.mlstm import chunkwise as _mlstm_chunkwise
from pallas_kernels.mlstm import mosaic as _mlstm_mosaic
from pallas_kernels.mlstm import reference as _mlstm
from pallas_kernels.mlstm import step as _mlstm_step
from pallas_kernels.slstm import kernel as _slstm_kernel
from pallas_kernels.slstm import reference as _slstm

logger = logging.getLogger("pallas_kernels")
_logged: set[tuple[str, str]] = set()

IMPLEMENTATIONS: Mapping[str, Mapping[str, Callable]] = MappingProxyType(
    {
        "mlstm_parallel": MappingProxyType({"xla": _mlstm.parallel}),
        "mlstm_recurrent": MappingProxyType({"xla": _mlstm.recurrent}),
        "mlstm_chunkwise": MappingProxyType(
            {
                "xla": _mlstm.chunkwise,
                "pallas": _mlstm_chunkwise.mlstm_chunkwise_pallas,
                "mosaic": _mlstm_mosaic.mlstm_chunkwise_mosaic,
            }
        ),
        "mlstm_step": MappingProxyType(
            {"xla": _mlstm.step, "pallas": _mlstm_step.mlstm_step_pallas}
        ),
        "slstm": MappingProxyType({"xla": _slstm.scan, "pallas": _slstm_kernel.slstm_pallas}),
    }
)


def on_cuda_gpu() -> bool:
    """Whether JAX's default device is a CUDA GPU."""
    dev = jax.devices()[0]
    return dev.platform == "gpu" and "cuda" in dev.client.platform_version.lower()


def on_hopper_or_newer() -> bool:
    """Whether JAX's default device is a CUDA GPU of compute capability 9.0 or more (the
    wgmma/TMA instructions of the Mosaic kernels)."""
    if not on_cuda_gpu():
        return False
    capability = getattr(jax.devices()[0], "compute_capability", None)
    try:
        return float(capability) >= 9.0
    except (TypeError, ValueError):
        return False


def _mosaic_usable(op: str) -> bool:
    return (
        "mosaic" in IMPLEMENTATIONS[op]
        and _mlstm_mosaic.mosaic_unsupported_reason() is None
        and on_hopper_or_newer()
    )


def resolve_impl(op: str, impl: str, interpret: bool) -> str:
    """Returns ``"xla"``, ``"pallas"`` or ``"mosaic"``: the path ``impl`` asks for on this
    machine, before ``auto``'s check of the kernel (see ``select``; ``auto`` resolves to
    "pallas" or "xla" here and may move to "mosaic" there).

    Raises:
      ValueError: an unknown ``impl``; ``"pallas"`` for an op without a kernel, or on a
        machine without a CUDA GPU unless ``interpret``; ``"mosaic"`` for an op without a
        Mosaic kernel, with a JAX too old for it, or without an sm_90+ GPU unless
        ``interpret``.
    """
    check_impl(impl)
    table = IMPLEMENTATIONS[op]
    if impl == "xla":
        return "xla"
    if impl == "mosaic":
        if "mosaic" not in table:
            raise ValueError(
                f"impl='mosaic' was requested for `{op}`, but it has no Mosaic GPU kernel; use "
                f"impl='auto', impl='pallas' or impl='xla' (the ops with Mosaic kernels: "
                f"{', '.join(o for o, t in IMPLEMENTATIONS.items() if 'mosaic' in t)})."
            )
        reason = _mlstm_mosaic.mosaic_unsupported_reason()
        if reason is not None:
            raise ValueError(reason)
        if not (interpret or on_hopper_or_newer()):
            raise ValueError(
                f"impl='mosaic' for `{op}` needs a CUDA GPU of compute capability 9.0 or newer "
                "(H100/H200); on this machine pass interpret=True (slow, for testing) or use "
                "impl='auto'."
            )
        return "mosaic"
    if impl == "pallas":
        if "pallas" not in table:
            raise ValueError(
                f"impl='pallas' was requested for `{op}`, but it has no Pallas kernel; use "
                f"impl='auto' or impl='xla' (the ops with kernels: "
                f"{', '.join(o for o, t in IMPLEMENTATIONS.items() if 'pallas' in t)})."
            )
        if not (interpret or on_cuda_gpu()):
            raise ValueError(
                f"impl='pallas' for `{op}` needs a CUDA GPU; on this machine pass "
                "interpret=True (slow, for testing) or use impl='auto'."
            )
        return "pallas"
    return "pallas" if "pallas" in table and on_cuda_gpu() else "xla"


def select(op: str, impl: str, interpret: bool, probe: selfcheck.Probe | None = None) -> Callable:
    """The implementation of ``op`` to run, ready to call (a Pallas entry with
    ``interpret`` bound).

    With ``impl="auto"`` and a kernel available, the kernel is used only if it passes its
    check on ``probe`` (a small input of the call's configuration); without a probe
    ``auto`` takes the XLA path.
    """
    choice = resolve_impl(op, impl, interpret)
    table = IMPLEMENTATIONS[op]
    kernels = {
        name: functools.partial(table[name], interpret=interpret)
        for name in ("pallas", "mosaic")
        if name in table
    }
    if impl == "auto":
        if choice == "pallas" and (
            probe is None or not selfcheck.verify(op, kernels["pallas"], table["xla"], probe)
        ):
            choice = "xla"
        # The Mosaic kernel is the second choice, on sm_90+ only, and only once it has
        # passed its own check for this configuration.
        if (
            choice == "xla"
            and probe is not None
            and _mosaic_usable(op)
            and selfcheck.verify(op, kernels["mosaic"], table["xla"], probe, impl="mosaic")
        ):
            choice = "mosaic"
        if (op, choice) not in _logged:
            _logged.add((op, choice))
            logger.info("pallas_kernels.%s: impl='auto' chose the %s path", op, choice)
    return kernels.get(choice, table["xla"])
