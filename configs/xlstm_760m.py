"""760M xLSTM[7:1]: E 1536, 48 blocks, 4 heads, sLSTM at the 350M recipe's positions.

The peak LR is our choice (the paper does not give it), between the 350M and 125M values.
"""

from configs._paper import SLSTM_AT_48, paper_config
from train.config import ExperimentConfig


def get_config() -> ExperimentConfig:
    """The run described in this module's docstring."""
    return paper_config(
        "xlstm_760m", embedding_dim=1536, num_blocks=48, slstm_at=SLSTM_AT_48, lr=1.25e-3
    )
