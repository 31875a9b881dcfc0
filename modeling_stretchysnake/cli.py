"""How the command-line scripts report bad input: one line naming what is wrong, exit status 1, no traceback
(``--debug``, or ``STRETCHYSNAKE_DEBUG=1``, shows it)."""

from __future__ import annotations

import os
import sys


def pop_debug_flag(argv: list[str]) -> tuple[list[str], bool]:
    """argv without a bare ``--debug`` (one followed by another flag or nothing: transformers' TrainingArguments
    has a ``--debug VALUE`` option of its own), and whether it was there."""
    kept, debug = [], os.environ.get("STRETCHYSNAKE_DEBUG", "") not in ("", "0")
    for index, arg in enumerate(argv):
        if arg == "--debug" and (index + 1 == len(argv) or argv[index + 1].startswith("--")):
            debug = True
            continue
        kept.append(arg)
    return kept, debug


_debugging: bool | None = None  # while run_cli runs a script: whether --debug was given; None in library use


def library_warnings_wanted() -> bool:
    """Whether libraries' own transient warnings (huggingface_hub's download retries) should print: always in library
    use, with --debug in a console script, whose one error line counts them instead."""
    return _debugging is not False


def run_cli(main, argv: list[str] | None = None):
    """Call ``main(argv)``; an exception becomes ``error: <message>`` on stderr and exit status 1."""
    global _debugging
    argv, debug = pop_debug_flag(list(sys.argv[1:] if argv is None else argv))
    _debugging = debug
    try:
        return main(argv)
    except KeyboardInterrupt:
        raise
    except Exception as error:  # anything: a user sees one line; --debug gives the traceback
        if debug:
            raise
        message = str(error) or type(error).__name__
        print(f"error: {message}\n(run with --debug for the traceback)", file=sys.stderr)
        raise SystemExit(1) from None
