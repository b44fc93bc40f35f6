"""xLSTM-Large at 2.7B (2560 x 32), 5 heads (DHQK 256, DHV 512).

Context 2048; the recipe is in configs/_large.py.
"""

from configs._large import large_config
from train.config import ExperimentConfig


def get_config() -> ExperimentConfig:
    """The run described in this module's docstring."""
    return large_config("xlstm_large_2700m", embedding_dim=2560, num_blocks=32, num_heads=5)
