"""What every command shares: an argument parser whose ``--help`` shows each option's
default and worked examples, and a ``--debug`` flag (tracebacks instead of messages)."""

from __future__ import annotations

import argparse

from train.errors import DEBUG_ENV

__all__ = ["make_parser"]


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in every optional option's help; the description and examples keep their
    lines. (Required options have none; an option whose default is None says in its own
    help what leaving it out means.)"""

    def _get_help_string(self, action):
        if action.required or action.default is None:
            return action.help
        return super()._get_help_string(action)


def make_parser(
    prog: str, description: str, examples: list[str], exit_codes: list[str]
) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` for ``python -m PROG`` with ``examples`` and the command's
    ``exit_codes`` (one line each, "N meaning") under its help."""
    epilog = "examples:\n" + "\n".join(f"  {e}" for e in examples)
    epilog += "\n\nexit codes:\n" + "\n".join(f"  {c}" for c in exit_codes)
    parser = argparse.ArgumentParser(
        prog=prog, description=description, epilog=epilog, formatter_class=_HelpFormatter
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"show the traceback of an error instead of its one-paragraph message "
        f"(or set {DEBUG_ENV}=1)",
    )
    return parser
