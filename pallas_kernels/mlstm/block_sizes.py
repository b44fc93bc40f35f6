"""Tiling and launch parameters of the mLSTM kernels (chunkwise and decode step)."""

from __future__ import annotations

import dataclasses

from pallas_kernels.triton import check_tiles


@dataclasses.dataclass(frozen=True)
class BlockSizes:
    """Tiling and launch parameters of the mLSTM kernels (untuned on a GPU so far).

    Attributes:
      state_tile_qk, state_tile_v: (DHQK, DHV) tile of the state that one program of the
        chunk-state kernels (A: forward, C: backward) carries over the chunks.
      out_tile_qk: DHQK tile of the loop of the output kernel (B) over q, k and the state.
      out_tile_v: DHV tile of one program of the output kernel (B).
      bwd_tile_qk, bwd_tile_v: (DHQK, DHV) tiles of the loops of the gradient kernel (D).
      step_tile_v: DHV tile of one program of the decode-step kernel.
      num_warps_state, num_warps_chunk, num_warps_step: Triton warps of kernels A/C, B/D, step.
      num_stages: Triton pipeline stages.

    All tiles are powers of two >= 16; a tile larger than the (padded) head dim is clipped.
    """

    # Chosen from Triton 3.9 -> ptxas sm_90 resource counts, bf16 (no GPU run yet), at DHQK 128,
    # DHV 256 and at the xLSTM-7B head dims DHQK 256, DHV 512. 8 warps: A and C are spill-free
    # at L 64 and 128; 4 warps spill in B at L 128. B and D loop over DHQK tiles: holding whole
    # (L, DHQK) rows made D spill 0.4 KB/thread at DHQK 128 and 1.3 KB at 256 (L 64: two
    # (L, DHQK) fp32 accumulators alone fill the register file at 256), whatever the warps or
    # DHV tile. bwd_tile_qk 32: D takes 220 registers and no stack at L 64 at both head dims
    # (64 and 128 still spill); at L 128, D spills ~1 KB and B 0.2 KB. out_tile_qk 32: bf16 B
    # as with 64, and fp32 B spills 0.3 KB instead of 4.4 KB at DHQK 256. Shared memory at
    # most 64 KB. The DHQK 128 counts before the DHQK tiling: benchmarks/results/mlstm_kernel_cpu.md
    state_tile_qk: int = 64
    state_tile_v: int = 64
    out_tile_qk: int = 32
    out_tile_v: int = 64
    bwd_tile_qk: int = 32
    bwd_tile_v: int = 32
    step_tile_v: int = 64
    num_warps_state: int = 8
    num_warps_chunk: int = 8
    num_warps_step: int = 4
    num_stages: int = 1

    def validate(self) -> None:
        tiles = (
            "state_tile_qk",
            "state_tile_v",
            "out_tile_qk",
            "out_tile_v",
            "bwd_tile_qk",
            "bwd_tile_v",
            "step_tile_v",
        )
        launch = ("num_warps_state", "num_warps_chunk", "num_warps_step", "num_stages")
        check_tiles(
            "BlockSizes",
            {f: getattr(self, f) for f in tiles},
            {f: getattr(self, f) for f in launch},
        )


DEFAULT_BLOCK_SIZES = BlockSizes()
