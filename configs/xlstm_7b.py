"""xLSTM 7B (arXiv 2503.13427): E 4096, 32 blocks, 8 heads (DHQK 256, DHV 512), vocabulary
50304, context 8192; FSDP over every device (``mesh.fsdp=-1``), remat per block, bf16.

The optimizer and schedule values are in configs/_large.py (what is published and what is
ours). ``benchmarks/sharding_memory.py --config xlstm_7b`` prints the compiled train
step's memory on 8 and 64 simulated devices without running it.
"""

from configs._large import large_config
from train.config import ExperimentConfig, MeshConfig


def get_config() -> ExperimentConfig:
    """The run described in this module's docstring."""
    return large_config(
        "xlstm_7b",
        embedding_dim=4096,
        num_blocks=32,
        num_heads=8,
        context=8192,
        batch_size=256,
        steps=100_000,
        mesh=MeshConfig(data=1, fsdp=-1, tensor=1),
    )
