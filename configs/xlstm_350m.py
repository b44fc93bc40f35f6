"""The paper's 350M xLSTM[7:1]: E 1024, 48 blocks, 4 heads, sLSTM at [3, 5, 7, 40, 42, 44].

408.4M parameters with the untied head, the same count as the PyTorch reference's model
for this config (the paper reports 409.3M, which is the all-mLSTM twin's count). Trains
on ~15B tokens (28k steps x 256 x 2048); point ``data.path`` at a corpus prepared with
``python -m train.prepare_data``.
"""

from configs._paper import SLSTM_AT_48, paper_config
from train.config import ExperimentConfig


def get_config() -> ExperimentConfig:
    """The run described in this module's docstring."""
    return paper_config(
        "xlstm_350m", embedding_dim=1024, num_blocks=48, slstm_at=SLSTM_AT_48, lr=1e-3
    )
