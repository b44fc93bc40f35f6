"""The implementation names every op's ``impl`` argument takes: the one list of them.

``pallas_kernels.IMPLS`` is this tuple; the input checks (``_checks.check_impl``), the
dispatch and the model configs that pass ``impl`` through all read it from here.

  "auto"    the dispatch chooses (a kernel on a GPU where it passed its check, else XLA)
  "xla"     the pure-JAX reference (the specification; every op has it)
  "pallas"  the Pallas kernels with the Triton lowering (``pallas_kernels.triton``)
  "mosaic"  the Pallas kernels with the Mosaic GPU lowering (``pallas_kernels.mosaic``)
"""

from __future__ import annotations

IMPLS = ("auto", "xla", "pallas", "mosaic")
# The names that run a kernel, each answered by its backend module's ``supports``.
KERNEL_IMPLS = ("pallas", "mosaic")
