"""The formal-language tasks (paper §4.1, App. B.1.1; after Delétang et al. 2023): one
generator per task and the table of their vocabularies, chance levels and separators.

An example is the input string ``x`` (length n), a separator and the answer ``y``; how
each task lays out its ids is commented at its generator.
"""

from __future__ import annotations

import numpy as np

from train.data.synthetic.example import SyntheticTask

__all__ = ["FORMAL"]


# Each generator maps (rng, n) to (x, y) as int arrays.


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


FORMAL = [
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
