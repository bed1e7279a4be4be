"""CLI output (table or JSON) and errors with fixed exit codes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import click

from coord import errors

# Exit codes, fixed: scripts may rely on them.
EXIT_ERROR = 1
EXIT_USAGE = 2  # click's own usage errors
EXIT_CONFIG = 3
EXIT_UNAVAILABLE = 4
EXIT_NOT_FOUND = 5
EXIT_REFUSED = 6


class CLIError(click.ClickException):
    """A CLI failure with a fixed exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click declares it on the class


def from_coord_error(e: errors.CoordError) -> CLIError:
    if isinstance(e, errors.Unavailable | errors.DeadlineExceeded):
        code = EXIT_UNAVAILABLE
    elif isinstance(e, errors.NotFound):
        code = EXIT_NOT_FOUND
    elif isinstance(e, errors.InvalidArgument):
        code = EXIT_CONFIG
    elif isinstance(e, errors.FailedPrecondition):
        code = EXIT_REFUSED
    else:
        code = EXIT_ERROR
    return CLIError(e.message, code)


def text(b: bytes) -> str:
    """Bytes as text when they are UTF-8, else as a hex escape string."""
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return "0x" + b.hex()


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(c) for c in headers], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def emit(output: str, data: Any, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    if output == "json":
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        click.echo(table(headers, rows))
