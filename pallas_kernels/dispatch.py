"""One place that decides which implementation an op runs
(``impl="auto"|"xla"|"pallas"|"mosaic"``, the names of ``pallas_kernels.impls.IMPLS``).

``IMPLEMENTATIONS`` is the explicit, immutable table: op name -> {"xla": fn, "pallas": fn,
"mosaic": fn}. The XLA entry is the pure-JAX reference (the specification); a "pallas"
entry (Triton lowering) exists where a kernel does; a "mosaic" entry (Mosaic GPU lowering)
exists for ``mlstm_chunkwise``. Every entry of one op takes the same arguments (the kernel
ones also take ``interpret``, bound by ``select``). ``BACKENDS`` names the module of each
kernel implementation (``pallas_kernels.triton``, ``pallas_kernels.mosaic``); its
``supports(op, **facts)`` says whether it can run the op on this machine (None) or why not.
The dispatch knows no backend's limits: it asks.

``impl="auto"`` picks Pallas on a machine where the Triton backend supports the op (a CUDA
GPU) and the kernel passed its check for the call's configuration
(``pallas_kernels.selfcheck``: once per process). Where that check fails (or the op has no
Triton kernel) and the Mosaic GPU backend supports the op here (an sm_90+ GPU, a recent
enough JAX), it tries the Mosaic kernel the same way; XLA otherwise. It logs its choice once
per op and path. An explicit ``"pallas"`` or ``"mosaic"`` that cannot be honoured raises
``ValueError`` with the backend's reason, and a failing kernel raises its own error.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from types import MappingProxyType, ModuleType

import jax

from pallas_kernels import mosaic, selfcheck, triton
from pallas_kernels._checks import check_impl
from pallas_kernels.impls import KERNEL_IMPLS
from pallas_kernels.mlstm import mosaic_chunkwise as _mlstm_mosaic
from pallas_kernels.mlstm import reference as _mlstm
from pallas_kernels.mlstm import triton_chunkwise as _mlstm_triton
from pallas_kernels.mlstm import triton_step as _mlstm_step
from pallas_kernels.slstm import reference as _slstm
from pallas_kernels.slstm import triton_scan as _slstm_triton

logger = logging.getLogger("pallas_kernels")
_logged: set[tuple[str, str]] = set()

IMPLEMENTATIONS: Mapping[str, Mapping[str, Callable]] = MappingProxyType(
    {
        "mlstm_parallel": MappingProxyType({"xla": _mlstm.parallel}),
        "mlstm_recurrent": MappingProxyType({"xla": _mlstm.recurrent}),
        "mlstm_chunkwise": MappingProxyType(
            {
                "xla": _mlstm.chunkwise,
                "pallas": _mlstm_triton.mlstm_chunkwise_pallas,
                "mosaic": _mlstm_mosaic.mlstm_chunkwise_mosaic,
            }
        ),
        "mlstm_step": MappingProxyType(
            {"xla": _mlstm.step, "pallas": _mlstm_step.mlstm_step_pallas}
        ),
        "slstm": MappingProxyType({"xla": _slstm.scan, "pallas": _slstm_triton.slstm_pallas}),
    }
)
# The backend module of each kernel implementation: ``supports(op, **facts) -> str | None``.
BACKENDS: Mapping[str, ModuleType] = MappingProxyType({"pallas": triton, "mosaic": mosaic})


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


def _machine() -> dict[str, bool]:
    """The facts about this machine every backend's ``supports`` takes."""
    return {"cuda_gpu": on_cuda_gpu(), "sm90": on_hopper_or_newer()}


def unsupported_reason(op: str, impl: str, interpret: bool = False) -> str | None:
    """Why the kernel implementation ``impl`` ("pallas" or "mosaic") cannot run ``op`` on
    this machine (None when it can): its backend's answer, with ``interpret`` as given."""
    reason = BACKENDS[impl].supports(op, interpret=interpret, **_machine())
    if reason is None and impl not in IMPLEMENTATIONS[op]:
        reason = f"the dispatch table has no {impl!r} entry for `{op}`; use impl='xla'."
    return reason


def _usable(op: str, impl: str) -> bool:
    """Whether ``auto`` may consider the kernel ``impl`` for ``op``: only on hardware that
    runs it compiled (``interpret`` never makes a CPU a GPU for ``auto``)."""
    return impl in IMPLEMENTATIONS[op] and unsupported_reason(op, impl) is None


def resolve_impl(op: str, impl: str, interpret: bool) -> str:
    """Returns ``"xla"``, ``"pallas"`` or ``"mosaic"``: the path ``impl`` asks for on this
    machine, before ``auto``'s check of the kernel (see ``select``; ``auto`` resolves to
    "pallas" or "xla" here and may move to "mosaic" there).

    Raises:
      ValueError: an unknown ``impl``; ``"pallas"`` or ``"mosaic"`` where its backend's
        ``supports`` gives a reason (an op without such a kernel; a machine without a
        CUDA GPU, or for Mosaic without an sm_90+ GPU, unless ``interpret``; for Mosaic a
        JAX too old for it); the message is that reason.
    """
    check_impl(impl)
    if impl == "xla":
        return "xla"
    if impl in KERNEL_IMPLS:
        reason = unsupported_reason(op, impl, interpret)
        if reason is not None:
            raise ValueError(reason)
        return impl
    return "pallas" if _usable(op, "pallas") else "xla"


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
        for name in KERNEL_IMPLS
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
            and _usable(op, "mosaic")
            and selfcheck.verify(op, kernels["mosaic"], table["xla"], probe, impl="mosaic")
        ):
            choice = "mosaic"
        if (op, choice) not in _logged:
            _logged.add((op, choice))
            logger.info("pallas_kernels.%s: impl='auto' chose the %s path", op, choice)
    return kernels.get(choice, table["xla"])
