"""The synthetic source (``train.data.sources.DataSource``): a task of the paper
(``data.path=synthetic:TASK``, formal languages and MQAR) generated on the fly; only the
answer tokens are scored; evaluation is the scaled accuracy per length bucket."""

from __future__ import annotations

import grain

from train.config.schema import DataConfig
from train.data.evaluation import Evaluator
from train.data.objective import TokenRows
from train.data.synthetic.evaluation import SyntheticEvaluator
from train.data.synthetic.tasks import describe, get_task, max_scored, train_batches

__all__ = ["SyntheticSource"]


class SyntheticSource(TokenRows):
    """A synthetic task of the paper (``synthetic:TASK``): formal languages and MQAR."""

    def __init__(self, cfg: DataConfig):
        self.cfg = cfg
        self.task = get_task(cfg.path)
        self.vocab_size = self.task.vocab_size
        self.vocab_origin = f"synthetic:{self.task.name}'s {self.task.vocab_size} ids"
        self.max_scored = max_scored(cfg)
        self.reset_id = None  # one example per row: nothing to reset

    def prepare(self) -> str:
        return f"data: {describe(self.cfg)}"

    def train_batches(self, batch_size, seed, process_index, process_count) -> grain.MapDataset:
        return train_batches(self.cfg, batch_size, seed, process_index, process_count)

    def evaluator(
        self, graphdef, rest, batch_size, num_batches, seed, put, process_index, process_count
    ) -> Evaluator:
        del put, process_index, process_count  # every host scores the whole fixed set
        return SyntheticEvaluator(
            self.cfg, graphdef, rest, batch_size, num_batches, seed, self.max_scored
        )
