"""Parity with the 2-block Transformer baseline (RMSNorm, rotary positions, SwiGLU).

``python -m train.main --config llama_parity``: the same data, optimizer and budget as
``parity_xlstm*`` (``configs/_synthetic.py``).
"""

from configs._synthetic import parity_config
from train.config import ExperimentConfig


def get_config() -> ExperimentConfig:
    """The run described in this module's docstring."""
    return parity_config("llama")
