"""Tiling and launch parameters of the sLSTM kernels."""

from __future__ import annotations

import dataclasses

from pallas_kernels.triton import check_tiles


@dataclasses.dataclass(frozen=True)
class BlockSizes:
    """Tiling and launch parameters of the sLSTM kernels.

    Attributes:
      batch_tile: rows per program, a power of two >= 16 (the minimum rows of a Triton dot).
      dh_tile: tile T of the head dim for the recurrent dots (power of two >= 16); the head
        dim is processed as DH / T tiles.
      r_on_chip_max_bytes: keep one head's R on chip for the whole time loop when its size
        (4 * DH * DH * itemsize) is at most this; re-read it from L2 every step otherwise.
      num_warps, num_stages: Triton launch parameters.
    """

    batch_tile: int = 16
    dh_tile: int = 64
    r_on_chip_max_bytes: int = 64 * 1024
    # 8 warps: Triton 3.9 -> ptxas for sm_90 spills nothing at DH 64/128 (4 warps spills in
    # fp32) and ~50 B at DH 256. More stages make the pipeliner stage R in shared memory
    # (534 KB at DH 256, over the 228 KB an H100 SM has). benchmarks/results/slstm_kernel_cpu.md
    num_warps: int = 8
    num_stages: int = 1

    def validate(self) -> None:
        check_tiles(
            "BlockSizes",
            {"batch_tile": self.batch_tile, "dh_tile": self.dh_tile},
            {"num_warps": self.num_warps, "num_stages": self.num_stages},
        )


DEFAULT_BLOCK_SIZES = BlockSizes()
