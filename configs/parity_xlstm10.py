"""Parity with xLSTM[1:0] (two mLSTM blocks): train on lengths 3-40, evaluate on 40-256.

``python -m train.main --config parity_xlstm10``; the settings are in ``configs/_synthetic.py``.
"""

from configs._synthetic import parity_config
from train.config import ExperimentConfig


def get_config() -> ExperimentConfig:
    """The run described in this module's docstring."""
    return parity_config("xlstm10")
