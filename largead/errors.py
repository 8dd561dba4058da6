"""The one command-line error convention of the project, shared by ``largead``, ``training/*.py`` and ``scripts/``.

Every entry point prints an error as one line on stderr, ``<prog>: error: <message>``, and exits non-zero (1; 2 for
usage errors, which argparse reports itself; 130 when interrupted). ``LARGEAD_DEBUG=1`` re-raises instead, so the
traceback is there for those who want it. Flags are spelled with dashes (``--output-dir``); the underscore spelling
of the same flag (``--output_dir``, diffusers' style, which earlier releases used) is accepted as an alias.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

DEBUG_ENV = "LARGEAD_DEBUG"

# Exceptions whose message is written for the user: printed without their class name (the run-folder errors of
# largead.runfolder / largead.trainer are matched by name: this module imports nothing of the library).
_USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, KeyError, FileNotFoundError, FileExistsError,
                                                 NotADirectoryError, IsADirectoryError, PermissionError,
                                                 ConnectionError)
_USER_ERROR_NAMES = frozenset({"RunLockedError", "RunWriteError", "CheckpointError", "CheckpointWriteError",
                               "TrainingDivergedError", "NonFiniteLossError", "ConfigMismatchError"})


def debug_enabled() -> bool:
    """Whether ``LARGEAD_DEBUG`` asks for tracebacks."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def one_line(err: BaseException) -> str:
    """``err`` as one line: its message with newlines folded, prefixed by its class name unless it is one of the
    errors whose message is written for the user; chained causes are not repeated."""
    message = " ".join(str(err.args[0] if isinstance(err, KeyError) and err.args else err).split())
    if not message:
        message = type(err).__name__
    elif (not isinstance(err, _USER_ERRORS) or isinstance(err, UnicodeError)) and not any(
            c.__name__ in _USER_ERROR_NAMES for c in type(err).__mro__):
        message = f"{type(err).__name__}: {message}"
    return message


def run_cli(prog: str, fn: Callable[[], Any]) -> NoReturn:
    """Run ``fn()`` and exit: 0 on success (or ``fn``'s integer result), 1 with one line on stderr on an error,
    130 on Ctrl-C. ``SystemExit`` (argparse's usage errors, exit 2) passes through."""
    try:
        result = fn()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as err:  # noqa: BLE001 - the one place errors become one line
        if debug_enabled():
            raise
        print(f"{prog}: error: {one_line(err)} (set {DEBUG_ENV}=1 for a traceback)", file=sys.stderr)
        sys.exit(1)
    sys.exit(result if isinstance(result, int) and not isinstance(result, bool) else 0)


def normalize_flags(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> list[str]:
    """``argv`` with underscore spellings of the parser's dashed flags rewritten (``--output_dir x`` ->
    ``--output-dir x``, ``--max_steps=4`` -> ``--max-steps=4``); everything else (values, ``key=value``
    overrides, arguments after ``--``) is left as it is."""
    args = list(sys.argv[1:] if argv is None else argv)
    known: set[str] = set()
    todo = [parser]
    while todo:  # the parser's flags and those of its subcommands
        p = todo.pop()
        known |= set(p._option_string_actions)  # noqa: SLF001 - argparse has no public accessor
        for action in p._actions:  # noqa: SLF001
            if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
                todo.extend(action.choices.values())
    out: list[str] = []
    for i, a in enumerate(args):
        if a == "--":
            out.extend(args[i:])
            break
        if a.startswith("--") and "_" in a.split("=", 1)[0]:
            name, eq, value = a.partition("=")
            dashed = name.replace("_", "-")
            if dashed in known and name not in known:
                a = dashed + eq + value
        out.append(a)
    return out


__all__ = ["DEBUG_ENV", "debug_enabled", "normalize_flags", "one_line", "run_cli"]
