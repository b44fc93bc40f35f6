"""xLSTM[1:0] twin of ``xlstm_350m``: the same recipe with mLSTM blocks only."""

from configs._paper import paper_config
from train.config import ExperimentConfig


def get_config() -> ExperimentConfig:
    """The run described in this module's docstring."""
    return paper_config("xlstm_350m_10", embedding_dim=1024, num_blocks=48, slstm_at=(), lr=1e-3)
