"""1.3B xLSTM[7:1]: E 2048, 48 blocks, 4 heads, sLSTM at the 350M recipe's positions."""

from configs._paper import SLSTM_AT_48, paper_config
from train.config import ExperimentConfig


def get_config() -> ExperimentConfig:
    """The run described in this module's docstring."""
    return paper_config(
        "xlstm_1300m", embedding_dim=2048, num_blocks=48, slstm_at=SLSTM_AT_48, lr=1e-3
    )
