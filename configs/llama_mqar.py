"""MQAR (context 128, 8 pairs) with the 2-block Transformer baseline.

``python -m train.main --config llama_mqar``: the same data, optimizer and budget as
``mqar_xlstm*`` (``configs/_synthetic.py``).
"""

from configs._synthetic import mqar_config
from train.config import ExperimentConfig


def get_config() -> ExperimentConfig:
    """The run described in this module's docstring."""
    return mqar_config("llama")
