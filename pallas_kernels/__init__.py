"""The performance-critical xLSTM recurrences: pure-JAX references (the specification and
the CPU path) behind one dispatch point that later routes to Pallas GPU kernels.

    import pallas_kernels as pk
    h = pk.mlstm_chunkwise(q, k, v, i, f, chunk_size=64)
"""

from pallas_kernels import mlstm_pallas as _mlstm_pallas  # noqa: F401 (registers the kernels)
from pallas_kernels import slstm_pallas as _slstm_pallas  # noqa: F401 (registers the kernel)
from pallas_kernels.dispatch import resolve_impl
from pallas_kernels.mlstm import (
    mlstm_chunkwise,
    mlstm_parallel,
    mlstm_recurrent,
    mlstm_step,
)
from pallas_kernels.mlstm import zero_state as mlstm_zero_state
from pallas_kernels.slstm import slstm, slstm_step
from pallas_kernels.slstm import zero_state as slstm_zero_state

__all__ = [
    "mlstm_chunkwise",
    "mlstm_parallel",
    "mlstm_recurrent",
    "mlstm_step",
    "mlstm_zero_state",
    "resolve_impl",
    "slstm",
    "slstm_step",
    "slstm_zero_state",
]
