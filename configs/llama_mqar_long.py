"""MQAR (context 128, 8 pairs) with the Transformer baseline, at the budget that solves it:
6000 steps x 128 sequences (24x ``llama_mqar``'s, about 12% of the paper's 100k samples x
64 epochs).

``python -m train.main --config llama_mqar_long``: the model, data and optimizer of
``llama_mqar`` (E 64, 2 blocks, 1 head, tied head, LR 1e-2, 100 warm-up steps, cosine
decay over the run). Seed 0 (2026-12-08): val_acc 0.116 at step 2000, 0.991 at 3000,
0.995 at 4000; about an hour on 2 shared CPU cores. The Transformer needs this budget to
form its induction circuit; the xLSTM[1:1] solves MQAR in ``llama_mqar``'s (see
``docs/quality.md``).
"""

from dataclasses import replace

from configs._synthetic import mqar_config
from train.config import ExperimentConfig


def get_config() -> ExperimentConfig:
    """The run described in this module's docstring."""
    cfg = mqar_config("llama")
    train = replace(cfg.train, steps=6000, batch_size=128, eval_every=1000)
    return replace(cfg, name="llama_mqar_long", train=train)
