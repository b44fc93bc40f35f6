"""The performance-critical xLSTM recurrences: pure-JAX references (the specification and
the CPU path) and Pallas GPU kernels, behind one dispatch (``pallas_kernels.dispatch``).

    import pallas_kernels as pk
    h = pk.mlstm_chunkwise(q, k, v, i, f, chunk_size=64)

Layout: one folder per op (``mlstm/``, ``slstm/``) with its reference (``reference.py``),
its public entries (``api.py``), its kernels in files named by backend and phase
(``triton_chunkwise.py``, ``triton_forward.py``, ``mosaic_chunkwise.py``, ...) and its
Triton block sizes (``block_sizes.py``). One module per backend says where its kernels run
(``supports``) and holds what they share: ``triton.py`` (Triton lowering, ``impl="pallas"``)
and ``mosaic.py`` (Mosaic GPU, ``impl="mosaic"``). ``impls.py`` names the implementations
(``IMPLS``), ``dispatch.py`` chooses one per call, ``selfcheck.py`` checks a kernel before
``auto`` first trusts it, ``_checks.py`` holds the input checks.
"""

from pallas_kernels.dispatch import IMPLEMENTATIONS, resolve_impl
from pallas_kernels.impls import IMPLS
from pallas_kernels.mlstm.api import (
    mlstm_chunkwise,
    mlstm_parallel,
    mlstm_recurrent,
    mlstm_step,
)
from pallas_kernels.mlstm.reference import MLSTMState
from pallas_kernels.mlstm.reference import zero_state as mlstm_zero_state
from pallas_kernels.slstm.api import slstm, slstm_step
from pallas_kernels.slstm.reference import SLSTMState
from pallas_kernels.slstm.reference import zero_state as slstm_zero_state

__all__ = [
    "IMPLEMENTATIONS",
    "IMPLS",
    "MLSTMState",
    "SLSTMState",
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
