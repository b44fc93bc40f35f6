"""The synthetic tasks by name (``data.path=synthetic:TASK``), the checks of a config that
uses one, and its training batches.

Examples are generated on the fly, deterministically from ``(train.seed, step)``, so a run
resumed at step k sees the same batches as an uninterrupted one. A batch is a
``train.data.batch.Batch``: the token rows ``(b, s + 1)`` and their loss mask (the answer
tokens, padding unscored).
"""

from __future__ import annotations

import grain
import numpy as np

from train.data.batch import Batch
from train.data.synthetic.example import Example, SyntheticTask
from train.data.synthetic.formal import FORMAL
from train.data.synthetic.mqar import MQAR, mqar_example

__all__ = [
    "EVAL_STREAM",
    "PREFIX",
    "TASKS",
    "TRAIN_STREAM",
    "check_setup",
    "describe",
    "get_task",
    "make_batch",
    "max_scored",
    "task_name",
    "train_batches",
]

PREFIX = "synthetic:"
# Streams of the seed: training batches and the fixed evaluation set never share draws.
TRAIN_STREAM, EVAL_STREAM = 0, 1

TASKS: dict[str, SyntheticTask] = {t.name: t for t in FORMAL}
TASKS["mqar"] = MQAR


def task_name(path: str) -> str | None:
    """The task of a ``synthetic:TASK`` data path; None for any other path."""
    return path[len(PREFIX) :] if path.startswith(PREFIX) else None


def get_task(path: str) -> SyntheticTask:
    """The task named by ``data.path=synthetic:TASK``.

    Raises:
        ValueError: an unknown task; the message lists the valid ones.
    """
    name = task_name(path)
    if name not in TASKS:
        raise ValueError(
            f"data.path={path!r}: unknown synthetic task {name!r}; valid tasks: "
            + ", ".join(f"{PREFIX}{t}" for t in TASKS)
            + "."
        )
    return TASKS[name]


def check_setup(data_cfg) -> None:
    """Checks a ``synthetic:TASK`` data config: the task exists and its training examples
    fit ``data.seq_len + 1`` tokens.

    Raises:
        ValueError: the message names the setting to change.
    """
    task = get_task(data_cfg.path)
    if task.kind == "mqar":
        mqar_example(np.random.default_rng(0), data_cfg.seq_len + 1, data_cfg.num_kv_pairs)
        return
    lo, hi = data_cfg.train_lengths
    need = max(task.width(int(n)) for n in task.lengths(lo, hi))
    if need > data_cfg.seq_len + 1:
        raise ValueError(
            f"synthetic:{task.name} with data.train_lengths=({lo}, {hi}) needs sequences of "
            f"{need} tokens; set data.seq_len={need - 1} (or more)."
        )
    task.lengths(data_cfg.eval_buckets[0], data_cfg.eval_buckets[-1])


def max_scored(data_cfg) -> int | None:
    """The most scored tokens a row of this task can have when that is a small known
    number (MQAR: ``data.num_kv_pairs``), else None. The loss then computes logits at
    those positions only (``train.data.objective.scored_predictions``)."""
    return data_cfg.num_kv_pairs if get_task(data_cfg.path).kind == "mqar" else None


def _batch(examples: list[Example], width: int) -> tuple[Batch, np.ndarray]:
    """Right-pads examples to ``width`` (padding: id 0, unscored); returns the batch
    ``(b, width)`` and the input lengths ``(b,)``."""
    tokens = np.zeros((len(examples), width), np.int32)
    mask = np.zeros((len(examples), width), bool)
    for i, ex in enumerate(examples):
        tokens[i, : len(ex.tokens)] = ex.tokens
        mask[i, : len(ex.tokens)] = ex.scored
    return Batch(tokens, mask), np.array([ex.length for ex in examples], np.int64)


def make_batch(
    task: SyntheticTask,
    rng: np.random.Generator,
    batch_size: int,
    width: int,
    lengths: tuple[int, int],
    num_kv_pairs: int,
) -> tuple[Batch, np.ndarray]:
    """``batch_size`` examples padded to ``width`` tokens with input lengths drawn uniformly
    from the task's valid lengths in ``lengths`` (MQAR: each example is ``width`` long).

    Returns:
        The batch (b, width) and the input lengths (b,).
    """
    if task.kind == "mqar":
        exs = [mqar_example(rng, width, num_kv_pairs) for _ in range(batch_size)]
    else:
        ns = rng.choice(task.lengths(*lengths), batch_size)
        exs = [task.example(rng, int(n)) for n in ns]
    return _batch(exs, width)


class _TrainSource:
    """Random access to training batches: batch ``step`` comes from the seed and the step."""

    def __init__(self, task, batch_size, width, lengths, num_kv_pairs, seed):
        self.args = (task, batch_size, width, lengths, num_kv_pairs)
        self.seed = seed

    def __len__(self) -> int:
        return 2**40  # endless for any practical run

    def __getitem__(self, step: int) -> Batch:
        rng = np.random.default_rng([self.seed, TRAIN_STREAM, int(step)])
        return make_batch(self.args[0], rng, *self.args[1:])[0]


def train_batches(
    data_cfg, batch_size: int, seed: int, process_index: int = 0, process_count: int = 1
) -> grain.MapDataset:
    """Endless training batches of ``data.path=synthetic:TASK``: ``ds[step]`` is this
    host's rows (``process_index::process_count``) of the global ``Batch``
    ``(batch_size, data.seq_len + 1)``, a pure function of ``(seed, step)``."""
    task = get_task(data_cfg.path)
    src = _TrainSource(
        task,
        batch_size,
        data_cfg.seq_len + 1,
        tuple(data_cfg.train_lengths),
        data_cfg.num_kv_pairs,
        seed,
    )
    ds = grain.MapDataset.source(src)
    if process_count > 1:
        ds = ds.map(lambda batch: Batch(*(x[process_index::process_count] for x in batch)))
    return ds


def describe(data_cfg) -> str:
    """One line on the task for the start-up report."""
    task = get_task(data_cfg.path)
    if task.kind == "mqar":
        return (
            f"synthetic:mqar, vocabulary {task.vocab_size}, context {data_cfg.seq_len + 1}, "
            f"{data_cfg.num_kv_pairs} key-value pairs, generated on the fly"
        )
    lo, hi = data_cfg.train_lengths
    return (
        f"synthetic:{task.name}, vocabulary {task.vocab_size}, s_rand {task.s_rand:.3g}, "
        f"train lengths {lo}-{hi}, eval buckets {list(data_cfg.eval_buckets)}, generated on "
        f"the fly"
    )
