"""What every data source yields: token rows with an explicit loss mask.

Shapes: ... leading batch axes (b, or (a, m) for accumulation), S + 1 tokens per row.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Batch(NamedTuple):
    """``tokens`` int32 (..., S + 1) and ``loss_mask`` bool (..., S + 1).

    The model reads ``tokens[..., :-1]`` and predicts ``tokens[..., 1:]``;
    ``loss_mask[..., t]`` says whether the prediction of ``tokens[..., t]`` counts in the
    loss and the metrics (``loss_mask[..., 0]`` is unused: nothing predicts the first token).
    Text corpora score every token; the synthetic tasks only their answers.
    """

    tokens: np.ndarray
    loss_mask: np.ndarray


def all_scored(tokens: np.ndarray) -> Batch:
    """A batch of text: every token scored."""
    tokens = np.asarray(tokens, np.int32)
    return Batch(tokens, np.ones(tokens.shape, bool))
