"""xLSTM-Large at the 165M size of the official JAX ladder (768 x 12), 4 heads
(DHQK 96, DHV 192).

Context 2048; the recipe is in configs/_large.py.
"""

from configs._large import large_config
from train.config import ExperimentConfig


def get_config() -> ExperimentConfig:
    """The run described in this module's docstring."""
    return large_config("xlstm_large_165m", embedding_dim=768, num_blocks=12, num_heads=4)
