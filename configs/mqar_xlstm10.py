"""MQAR (context 128, 8 key-value pairs, vocabulary 8192) with xLSTM[1:0] (two mLSTM blocks).

``python -m train.main --config mqar_xlstm10``; other settings: ``--set data.seq_len=256
data.num_kv_pairs=16``. The rest is in ``configs/_synthetic.py``.
"""

from configs._synthetic import mqar_config
from train.config import ExperimentConfig


def get_config() -> ExperimentConfig:
    """The run described in this module's docstring."""
    return mqar_config("xlstm10")
