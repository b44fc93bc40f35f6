"""Parity with xLSTM[1:1] (mLSTM, then sLSTM): train on lengths 3-40, evaluate on 40-256.

``python -m train.main --config parity_xlstm11``; the settings are in ``configs/_synthetic.py``.
"""

from configs._synthetic import parity_config
from train.config import ExperimentConfig


def get_config() -> ExperimentConfig:
    """The run described in this module's docstring."""
    return parity_config("xlstm11")
