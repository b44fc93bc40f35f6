"""125M xLSTM[7:1]: E 768, 24 blocks, 4 heads (the paper's 125M size).

The sLSTM positions and the peak LR are our choices (the paper does not give them):
[3, 20] mirrors the 350M recipe's early-and-late placement in a stack half as deep, and the
LR follows the usual rule of a higher peak for a smaller model.
"""

from configs._paper import paper_config
from train.config import ExperimentConfig


def get_config() -> ExperimentConfig:
    """The run described in this module's docstring."""
    return paper_config("xlstm_125m", embedding_dim=768, num_blocks=24, slstm_at=(3, 20), lr=3e-3)
