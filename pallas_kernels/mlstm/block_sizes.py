"""Tiling and launch parameters of the mLSTM kernels (chunkwise and decode step)."""

from __future__ import annotations

import dataclasses

from pallas_kernels._triton import check_tiles


@dataclasses.dataclass(frozen=True)
class BlockSizes:
    """Tiling and launch parameters of the mLSTM kernels (untuned on a GPU so far).

    Attributes:
      state_tile_qk, state_tile_v: (DHQK, DHV) tile of the state that one program of the
        chunk-state kernels (A: forward, C: backward) carries over the chunks.
      out_tile_v: DHV tile of one program of the output kernel (B).
      bwd_tile_v: DHV tile of the inner loop of the gradient kernel (D).
      step_tile_v: DHV tile of one program of the decode-step kernel.
      num_warps_state, num_warps_chunk, num_warps_step: Triton warps of kernels A/C, B/D, step.
      num_stages: Triton pipeline stages.

    All tiles are powers of two >= 16; a tile larger than the (padded) head dim is clipped.
    """

    # Chosen from Triton 3.9 -> ptxas sm_90 resource counts at DHQK 128, DHV 256, bf16 (no GPU
    # run yet): 8 warps keep kernels A, B, C spill-free at L 64 and 128 (4 warps spill in B at
    # L 128); kernel D still spills (~0.4 KB/thread at L 64, ~1.9 KB at L 128) with
    # bwd_tile_v 32, less than with 64. benchmarks/results/mlstm_kernel_cpu.md
    state_tile_qk: int = 64
    state_tile_v: int = 64
    out_tile_v: int = 64
    bwd_tile_v: int = 32
    step_tile_v: int = 64
    num_warps_state: int = 8
    num_warps_chunk: int = 8
    num_warps_step: int = 4
    num_stages: int = 1

    def validate(self) -> None:
        tiles = ("state_tile_qk", "state_tile_v", "out_tile_v", "bwd_tile_v", "step_tile_v")
        launch = ("num_warps_state", "num_warps_chunk", "num_warps_step", "num_stages")
        check_tiles(
            "BlockSizes",
            {f: getattr(self, f) for f in tiles},
            {f: getattr(self, f) for f in launch},
        )


DEFAULT_BLOCK_SIZES = BlockSizes()
