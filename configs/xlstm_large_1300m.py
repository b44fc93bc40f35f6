"""xLSTM-Large at 1.3B (2048 x 24), 4 heads (DHQK 256, DHV 512).

Context 2048; the recipe is in configs/_large.py.
"""

from configs._large import large_config
from train.config import ExperimentConfig


def get_config() -> ExperimentConfig:
    """The run described in this module's docstring."""
    return large_config("xlstm_large_1300m", embedding_dim=2048, num_blocks=24, num_heads=4)
