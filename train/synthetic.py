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

A batch is a ``train.batch.Batch``: the token rows ``(b, s + 1)`` and their loss mask (the
answer tokens, padding unscored).

Metric: the accuracy of the arg-max prediction on scored tokens (the mean over a
sequence's scored tokens, then over sequences), scaled so that chance is 0 and perfect is
1: ``(acc - s_rand) / (1 - s_rand)``. MQAR has ``s_rand = 0`` (its scaled accuracy is its
accuracy).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import grain
import numpy as np

from train.batch import Batch

__all__ = [
    "MQAR_VOCAB",
    "PREFIX",
    "TASKS",
    "EvalBatch",
    "Example",
    "SyntheticTask",
    "describe",
    "eval_set",
    "get_task",
    "max_scored",
    "scaled_accuracy",
    "task_name",
    "train_batches",
]

PREFIX = "synthetic:"
MQAR_VOCAB = 8192
# Zoology's power-law exponent for the query gaps.
MQAR_POWER_A = 0.01
# Streams of the seed: training batches and the fixed evaluation set never share draws.
_TRAIN_STREAM, _EVAL_STREAM = 0, 1


@dataclass(frozen=True)
class Example:
    """One generated sequence: ``tokens`` (int32, all ids non-negative), ``scored``
    (bool, same length: whether predicting this token is scored) and ``length`` (n, the
    input length the metrics are bucketed by)."""

    tokens: np.ndarray
    scored: np.ndarray
    length: int


def scaled_accuracy(acc, s_rand: float):
    """``(acc - s_rand) / (1 - s_rand)``: 0 at chance level, 1 when perfect."""
    return (acc - s_rand) / (1.0 - s_rand)


# ---------------------------------------------------------------------------------------
# Formal languages: each generator maps (rng, n) to (x, y) as int arrays.


def _parity(rng, n):
    x = rng.integers(0, 2, n)
    return x, np.array([x.sum() % 2])


def _even_pairs(rng, n):
    # The number of "ab" plus "ba" substrings is even exactly when the string starts and
    # ends with the same symbol; answer 1 = even.
    x = rng.integers(0, 2, n)
    return x, np.array([int(x[0] == x[-1])])


_CYCLE = 5
_CYCLE_STEP = np.array([0, 1, -1])  # symbol 0 stays, 1 moves forward, 2 moves back


def _cycle_navigation(rng, n):
    x = rng.integers(0, 3, n)
    # Answers are ids 4..8 (after the 3 moves and SEP).
    return x, np.array([4 + int(_CYCLE_STEP[x].sum() % _CYCLE)])


_MOD = 5
_PLUS, _MINUS, _TIMES = 5, 6, 7  # after the digits 0..4


def _mod_arithmetic(rng, n):
    # n is odd: (n + 1) / 2 digits with an operator between each pair; * binds tighter.
    m = (n + 1) // 2
    digits = rng.integers(0, _MOD, m)
    ops = rng.choice([_PLUS, _MINUS, _TIMES], m - 1)
    x = np.empty(n, np.int64)
    x[0::2], x[1::2] = digits, ops
    total, term, sign = 0, int(digits[0]), 1
    for op, d in zip(ops, digits[1:], strict=True):
        if op == _TIMES:
            term = term * int(d) % _MOD
        else:
            total += sign * term
            term, sign = int(d), (1 if op == _PLUS else -1)
    total += sign * term
    return x, np.array([total % _MOD])


def _majority(rng, n):
    # 63 symbols; the most frequent one, the smallest id on a tie.
    x = rng.integers(0, 63, n)
    return x, np.array([int(np.argmax(np.bincount(x, minlength=63)))])


def _majority_count(rng, n):
    # How often the most frequent symbol occurs, as a symbol id modulo 63 (counts >= 63
    # need n >= 63 and are rare at these lengths).
    x = rng.integers(0, 63, n)
    return x, np.array([int(np.bincount(x).max()) % 63])


def _repetition(rng, n):
    x = rng.integers(0, 10, n)
    return x, x.copy()


def _bucket_sort(rng, n):
    x = rng.integers(0, 10, n)
    return x, np.sort(x)


_MISSING = 9  # after the symbols 0..8


def _missing_duplicate(rng, n):
    # n is even: a string of n / 2 symbols twice, one position blanked; answer its symbol.
    half = rng.integers(0, 9, n // 2)
    x = np.concatenate([half, half])
    pos = rng.integers(0, n)
    y = np.array([x[pos]])
    x[pos] = _MISSING
    return x, y


# Expressions mod 5 with brackets (modular arithmetic with brackets, solve equation), after
# Delétang et al.'s tasks/dcf/modular_arithmetic_brackets.py: an expression of length 1-4
# is d, -d, (d) or (-d); a longer one is "(" left op right ")" with the left length
# uniform in 1..n-4. Every length n >= 1 is reachable, so both tasks take any n.
_OPEN, _CLOSE = 8, 9  # after the digits 0..4 and the operators + - * (5, 6, 7)
_X, _EQUALS = 10, 11  # solve equation only


def _combine(op: int, a: int, b: int) -> int:
    if op == _PLUS:
        return (a + b) % _MOD
    if op == _MINUS:
        return (a - b) % _MOD
    return a * b % _MOD


def _bracket_expr(rng, n: int, out: list[int]) -> int:
    """Appends a random bracketed expression of exactly n tokens to ``out``; returns its
    value mod 5."""
    if n <= 4:
        d = int(rng.integers(0, _MOD))
        negate = n in (2, 4)
        body = [_MINUS, d] if negate else [d]
        out.extend([_OPEN, *body, _CLOSE] if n >= 3 else body)
        return -d % _MOD if negate else d
    left = int(rng.integers(1, n - 3))  # 1..n-4: both sides get at least one token
    out.append(_OPEN)
    a = _bracket_expr(rng, left, out)
    op = int(rng.integers(_PLUS, _TIMES + 1))
    out.append(op)
    b = _bracket_expr(rng, n - 3 - left, out)
    out.append(_CLOSE)
    return _combine(op, a, b)


def _eval_bracket(tokens: list[int]) -> int:
    """The value mod 5 of an expression made by ``_bracket_expr`` (fully bracketed, so no
    precedence rules are needed; "-" right after "(" or an operator, or first, is unary)."""

    def operand(i):
        t = tokens[i]
        if t == _MINUS:
            return -tokens[i + 1] % _MOD, i + 2
        if t != _OPEN:
            return t, i + 1
        a, j = operand(i + 1)
        if tokens[j] == _CLOSE:
            return a, j + 1
        b, k = operand(j + 1)
        return _combine(tokens[j], a, b), k + 1

    value, end = operand(0)
    if end != len(tokens):
        raise ValueError("not a single bracketed expression")
    return value


def _mod_arithmetic_brackets(rng, n):
    # Delétang's class defaults to {+, -}; the xLSTM paper's task (and its vocabulary of
    # 12) has * as well.
    x = []
    value = _bracket_expr(rng, n, x)
    return np.array(x), np.array([value])


def _solve_equation(rng, n):
    # "expression = v" with one digit of the expression replaced by x (Delétang's
    # tasks/dcf/solve_equation.py: the expression has n - 2 tokens); the answer is x.
    # Delétang leaves * out because with it x may have several solutions (a factor
    # that is 0 mod 5 above x); we keep * (the paper's vocabulary of 14 has room for it)
    # and draw again until x is the only solution, so the label is well defined.
    while True:
        expr: list[int] = []
        value = _bracket_expr(rng, n - 2, expr)
        digits = [i for i, t in enumerate(expr) if t < _MOD]
        pos = digits[int(rng.integers(0, len(digits)))]
        solutions = [
            a for a in range(_MOD) if _eval_bracket(expr[:pos] + [a] + expr[pos + 1 :]) == value
        ]
        if len(solutions) == 1:
            answer = expr[pos]
            expr[pos] = _X
            return np.array([*expr, _EQUALS, value]), np.array([answer])


def _odds_first(rng, n):
    # The symbols at odd positions (1-based: x_1, x_3, ...), then those at even ones, as
    # in the docstring and examples of Delétang's tasks/cs/odds_first.py (its code takes
    # the 0-based odd indices first; the two orders are equally hard).
    x = rng.integers(0, 10, n)
    return x, np.concatenate([x[0::2], x[1::2]])


def _reverse_string(rng, n):
    x = rng.integers(0, 10, n)
    return x, x[::-1].copy()


_STACK_SYMBOLS = 3  # a, b, c = 0, 1, 2
_POP = 3  # PUSH a, b, c = 4, 5, 6
_STACK_END = 8  # after SEP = 7


def _stack_manipulation(rng, n):
    # Delétang's tasks/dcf/stack_manipulation.py: an initial stack (bottom first, 1..n-1
    # symbols) then n - len(stack) actions; a POP on an empty stack does nothing. The
    # answer is the final stack top first, then END (Delétang's termination token). He
    # pads the answer to n + 1 tokens and scores up to END; we end the example at END
    # instead (the batch's padding is unscored), so the answer length varies with the
    # sample and answer_len(n) = n + 1 is its upper bound. Three stack symbols instead of
    # his two: with END that is the four answer classes of the paper's s_rand = 1/4.
    m = 1 if n == 1 else int(rng.integers(1, n))
    stack = rng.integers(0, _STACK_SYMBOLS, m)
    actions = rng.integers(_POP, _POP + 1 + _STACK_SYMBOLS, n - m)
    current = list(stack)
    for a in actions:
        if a == _POP:
            if current:
                current.pop()
        else:
            current.append(int(a) - _POP - 1)
    return np.concatenate([stack, actions]), np.array([*current[::-1], _STACK_END])


_SET_SYMBOLS = 126
_SET_END = 127  # after SEP = 126


def _set(rng, n):
    # Each distinct symbol once, in order of first occurrence, then END. Neither paper's
    # code defines the order (Delétang has no set task; the xLSTM paper only names it);
    # first occurrence keeps the task a pure deduplication, not also a sort. The answer
    # length is the number of distinct symbols plus one (<= min(n, 126) + 1).
    x = rng.integers(0, _SET_SYMBOLS, n)
    _, first = np.unique(x, return_index=True)
    return x, np.append(x[np.sort(first)], _SET_END)


@dataclass(frozen=True)
class SyntheticTask:
    """A task's vocabulary, chance level and generator.

    Attributes:
        name: the name after ``synthetic:``.
        vocab_size: the paper's vocabulary size (the model's ``vocab_size`` must be >= it).
        s_rand: accuracy of guessing (the paper's Table 6).
        sep: the separator id between input and answer (formal languages).
        answer_len: ``n -> k``, the number of answer tokens for input length n; for the
            tasks whose answer length depends on the sample (closed by an END symbol) the
            most there can be, which sizes the batches.
        valid_length: which input lengths the task can make (e.g. odd for arithmetic).
        generate: ``(rng, n) -> (x, y)`` (formal languages).
        kind: ``"formal"`` or ``"mqar"``.
    """

    name: str
    vocab_size: int
    s_rand: float
    sep: int = -1
    answer_len: Callable[[int], int] = lambda n: 1
    valid_length: Callable[[int], bool] = lambda n: n >= 1
    generate: Callable | None = None
    kind: str = "formal"

    def width(self, n: int) -> int:
        """Tokens in an example with input length n (input, SEP, answer)."""
        return n + 1 + self.answer_len(n)

    def lengths(self, lo: int, hi: int) -> np.ndarray:
        """The input lengths in ``[lo, hi]`` the task can make."""
        out = np.array([n for n in range(lo, hi + 1) if self.valid_length(n)], np.int64)
        if not len(out):
            raise ValueError(f"synthetic:{self.name} makes no input length in [{lo}, {hi}].")
        return out

    def example(self, rng: np.random.Generator, n: int) -> Example:
        """One formal-language example of input length n."""
        x, y = self.generate(rng, n)
        if len(x) != n or not 1 <= len(y) <= self.answer_len(n):
            raise ValueError(f"synthetic:{self.name} made a malformed example for n = {n}.")
        tokens = np.concatenate([x, [self.sep], y]).astype(np.int32)
        scored = np.zeros(len(tokens), bool)
        scored[n + 1 :] = True
        return Example(tokens, scored, n)


_FORMAL = [
    SyntheticTask("parity", 3, 1 / 2, sep=2, generate=_parity),
    SyntheticTask("even_pairs", 3, 1 / 2, sep=2, generate=_even_pairs),
    SyntheticTask("cycle_navigation", 9, 1 / 5, sep=3, generate=_cycle_navigation),
    SyntheticTask(
        "mod_arithmetic",
        10,
        1 / 5,
        sep=8,
        valid_length=lambda n: n % 2 == 1,
        generate=_mod_arithmetic,
    ),
    SyntheticTask("majority", 64, 1 / 63, sep=63, generate=_majority),
    SyntheticTask("majority_count", 64, 1 / 63, sep=63, generate=_majority_count),
    SyntheticTask("repetition", 12, 1 / 10, sep=10, answer_len=lambda n: n, generate=_repetition),
    SyntheticTask("bucket_sort", 11, 1 / 10, sep=10, answer_len=lambda n: n, generate=_bucket_sort),
    SyntheticTask(
        "missing_duplicate",
        11,
        1 / 9,
        sep=10,
        valid_length=lambda n: n % 2 == 0 and n >= 2,
        generate=_missing_duplicate,
    ),
    # Digits 0-4, + - * 5-7, ( ) 8-9, SEP 10; 11 unused (Delétang's shared alphabet puts
    # x and = at 10 and 11).
    SyntheticTask("mod_arithmetic_brackets", 12, 1 / 5, sep=10, generate=_mod_arithmetic_brackets),
    # Symbols 0-9, SEP 10; 11 unused.
    SyntheticTask("odds_first", 12, 1 / 10, sep=10, answer_len=lambda n: n, generate=_odds_first),
    SyntheticTask(
        "reverse_string", 12, 1 / 10, sep=10, answer_len=lambda n: n, generate=_reverse_string
    ),
    # Stack symbols a b c 0-2, POP 3, PUSH a b c 4-6, SEP 7, END 8; 9-10 unused.
    SyntheticTask(
        "stack_manipulation",
        11,
        1 / 4,
        sep=7,
        answer_len=lambda n: n + 1,
        generate=_stack_manipulation,
    ),
    # Digits 0-4, + - * 5-7, ( ) 8-9, x 10, = 11, SEP 12; 13 unused. n >= 3: an
    # expression of at least one token, "=" and the value.
    SyntheticTask(
        "solve_equation",
        14,
        1 / 5,
        sep=12,
        valid_length=lambda n: n >= 3,
        generate=_solve_equation,
    ),
    # Symbols 0-125, SEP 126, END 127.
    SyntheticTask(
        "set",
        128,
        1 / 126,
        sep=126,
        answer_len=lambda n: min(n, _SET_SYMBOLS) + 1,
        generate=_set,
    ),
]
TASKS: dict[str, SyntheticTask] = {t.name: t for t in _FORMAL}
TASKS["mqar"] = SyntheticTask("mqar", MQAR_VOCAB, 0.0, kind="mqar")


def mqar_example(rng: np.random.Generator, length: int, num_kv_pairs: int) -> Example:
    """One MQAR sequence of ``length`` tokens with ``num_kv_pairs`` pairs (Zoology layout).

    Raises:
        ValueError: the queries do not fit (``length`` must be >= 4 * num_kv_pairs).
    """
    p = num_kv_pairs
    space = (length - 2 * p) // 2
    if space < p:
        raise ValueError(
            f"MQAR with {p} key-value pairs needs a context of at least {4 * p} tokens; got "
            f"{length}: raise data.seq_len or lower data.num_kv_pairs."
        )
    half = MQAR_VOCAB // 2
    keys = rng.choice(np.arange(1, half), p, replace=False)
    values = rng.choice(np.arange(half, MQAR_VOCAB), p, replace=False)
    tokens = rng.integers(0, MQAR_VOCAB, length)
    tokens[0 : 2 * p : 2], tokens[1 : 2 * p : 2] = keys, values
    g = np.arange(1, space + 1, dtype=np.float64)
    prob = MQAR_POWER_A * g ** (MQAR_POWER_A - 1)
    gaps = rng.choice(space, p, replace=False, p=prob / prob.sum())
    query = 2 * p + 2 * gaps
    tokens[query], tokens[query + 1] = keys, values
    scored = np.zeros(length, bool)
    scored[query + 1] = True
    return Example(tokens.astype(np.int32), scored, length)


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
    those positions only (``train.objective.scored_predictions``)."""
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
        rng = np.random.default_rng([self.seed, _TRAIN_STREAM, int(step)])
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


@dataclass(frozen=True)
class EvalBatch:
    """A fixed evaluation batch: the ``Batch`` ``(b, w)``, input lengths ``(b,)`` and the
    bucket (``"40-63"``) it belongs to."""

    batch: Batch
    lengths: np.ndarray
    bucket: str


def eval_set(data_cfg, batch_size: int, batches_per_bucket: int, seed: int) -> list[EvalBatch]:
    """The fixed evaluation set: for each length bucket, ``batches_per_bucket`` batches.

    Buckets are consecutive ``data.eval_buckets`` edges, ``[e_i, e_{i+1})``, the last one
    including its upper edge (40, 64, 128, 256 -> 40-63, 64-127, 128-256); each batch is
    padded to its bucket's widest example, so evaluation compiles once per bucket. MQAR
    has one bucket, its context length.
    """
    task = get_task(data_cfg.path)
    rng = np.random.default_rng([seed, _EVAL_STREAM])
    if task.kind == "mqar":
        w = data_cfg.seq_len + 1
        return [
            EvalBatch(*make_batch(task, rng, batch_size, w, (w, w), data_cfg.num_kv_pairs), str(w))
            for _ in range(batches_per_bucket)
        ]
    edges = list(data_cfg.eval_buckets)
    out = []
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        hi = hi if i == len(edges) - 2 else hi - 1
        ns = task.lengths(lo, hi)
        width = max(task.width(int(n)) for n in ns)
        for _ in range(batches_per_bucket):
            batch, lengths = make_batch(task, rng, batch_size, width, (lo, hi), 0)
            out.append(EvalBatch(batch, lengths, f"{lo}-{hi}"))
    return out
