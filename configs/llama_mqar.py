"""MQAR (context 128, 8 pairs) with the 2-block Transformer baseline.

``python -m train.main --config llama_mqar``: the same data, optimizer and budget as
``mqar_xlstm*`` (``configs/_synthetic.py``).

At this budget the Transformer stays near chance: 0.062 after 1000 steps. The model is
not at fault: it matches Hugging Face's Llama (``tests/test_llama_parity.py``). The data
and the metric are Zoology's. The bottleneck is the induction circuit. Block 1 does not
learn a previous-token head in 1000 × 32 sequences: with RoPE, no biases and uniformly
random tokens, nothing in the residual stream is independent of content to build it
from. Handing each position its previous token, as the mLSTM's causal conv does, lifts
the same budget from 0.05 to 0.37. With 24x the sequences, ``llama_mqar_long`` solves
it (0.998). Commands, numbers and the ablations: ``docs/quality.md`` ("The Transformer
baseline and MQAR").
"""

from configs._synthetic import mqar_config
from train.config import ExperimentConfig


def get_config() -> ExperimentConfig:
    """The run described in this module's docstring."""
    return mqar_config("llama")
