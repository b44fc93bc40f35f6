"""The xLSTM paper's synthetic benchmarks as data sources: formal languages and MQAR.

Select a task with ``data.path=synthetic:TASK`` (``TASKS`` lists them). Examples are
generated on the fly, deterministically from ``(train.seed, step)``, so a run resumed at
step k sees the same batches as an uninterrupted one.

Formal languages (paper §4.1, App. B.1.1; after Delétang et al. 2023). An example is the
task's input string ``x`` (length n, the length the metrics are bucketed by), a separator
and the answer ``y``::

    x_1 ... x_n  SEP  y_1 ... y_k

k is 1 for the classification tasks and n for the transductions (repetition, bucket sort,
odds first, reverse string). Stack manipulation and set answer with a sequence whose
length depends on the sample, closed by an END symbol (k <= n + 1). The model reads the
example causally and is scored only where it predicts ``y`` (the loss mask).
Training uses n in ``data.train_lengths`` (3-40), evaluation n in ``data.eval_buckets``
(40-256). Vocabulary sizes and the chance level ``s_rand`` are the paper's (Table 6);
ids a layout does not need (a padding id) stay unused.

MQAR (App. B.1.2; the Zoology generator of Arora et al. 2023): ``num_kv_pairs`` key-value
pairs (keys from the lower half of the 8192-token vocabulary, values from the upper
half), then the keys again, each once and in random order, at gaps drawn from a power law
(``p(gap = g) ~ g^(a-1)``, a = 0.01: most queries come soon after the pairs); all other
positions hold random tokens. The model is scored where it must predict a queried key's
value. Its sequence is ``data.seq_len + 1`` tokens (the context).

A batch is a ``train.data.batch.Batch``: the token rows ``(b, s + 1)`` and their loss mask (the
answer tokens, padding unscored).

Metric: the accuracy of the arg-max prediction on scored tokens (the mean over a
sequence's scored tokens, then over sequences), scaled so that chance is 0 and perfect is
1: ``(acc - s_rand) / (1 - s_rand)``. MQAR has ``s_rand = 0`` (its scaled accuracy is its
accuracy).

Layout: ``example`` (what a task and an example are, the scaled accuracy), ``formal`` (the
formal-language generators), ``mqar`` (the MQAR generator), ``tasks`` (the table of tasks,
the checks of a config and the training batches), ``evaluation`` (the fixed evaluation set
and its evaluator), ``source`` (the data source the loop uses).
"""

from train.data.synthetic.evaluation import EvalBatch, eval_set
from train.data.synthetic.example import Example, SyntheticTask, scaled_accuracy
from train.data.synthetic.mqar import MQAR_VOCAB, mqar_example
from train.data.synthetic.tasks import (
    PREFIX,
    TASKS,
    check_setup,
    describe,
    get_task,
    make_batch,
    max_scored,
    task_name,
    train_batches,
)

__all__ = [
    "MQAR_VOCAB",
    "PREFIX",
    "TASKS",
    "EvalBatch",
    "Example",
    "SyntheticTask",
    "check_setup",
    "describe",
    "eval_set",
    "get_task",
    "make_batch",
    "max_scored",
    "mqar_example",
    "scaled_accuracy",
    "task_name",
    "train_batches",
]
