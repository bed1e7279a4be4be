"""CLI output (table or JSON) and errors with fixed exit codes.

Exit codes are fixed: scripts may rely on them. The README's "Exit codes" table is
this module's ``EXIT_CODES`` (tests/unit/test_cli_output.py keeps them equal, and
tests/integration/test_cli_forgives.py runs every command into each).

JSON output: every integer is a JSON number, int64 fields of the wire messages
included (protobuf's own JSON mapping would print those as strings); bytes that are
not UTF-8 print as ``0x`` + hex in KV output. Under ``-o json`` an error is one JSON
object on stderr: ``{"error": {"reason": ..., "message": ..., "exit_code": ...}}``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from coord import errors

if TYPE_CHECKING:  # protobuf is imported by proto_dict (coordctl's start-up time)
    from google.protobuf.message import Message

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2  # click's own usage errors
EXIT_CONFIG = 3
EXIT_UNAVAILABLE = 4
EXIT_NOT_FOUND = 5
EXIT_REFUSED = 6

# code -> name (the JSON error's default reason): the README's "Exit codes" table,
# which says what each means.
EXIT_CODES: dict[int, str] = {
    EXIT_OK: "ok",
    EXIT_ERROR: "error",
    EXIT_USAGE: "usage",
    EXIT_CONFIG: "invalid_argument",
    EXIT_UNAVAILABLE: "unavailable",
    EXIT_NOT_FOUND: "not_found",
    EXIT_REFUSED: "refused",
}


class CLIError(click.ClickException):
    """A CLI failure with a fixed exit code and a machine-readable reason."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR, reason: str = "") -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click declares it on the class
        self.reason = reason or EXIT_CODES.get(exit_code, "error")


def exit_code_for(e: errors.CoordError) -> int:
    """The exit code of a coord error (the README's table)."""
    if isinstance(e, errors.Unavailable | errors.DeadlineExceeded):
        return EXIT_UNAVAILABLE
    if isinstance(e, errors.NotFound):
        return EXIT_NOT_FOUND
    if isinstance(e, errors.InvalidArgument):
        return EXIT_CONFIG
    if isinstance(e, errors.FailedPrecondition | errors.AlreadyExists):
        return EXIT_REFUSED
    return EXIT_ERROR


def from_coord_error(e: errors.CoordError, message: str = "") -> CLIError:
    """``e`` as a CLI error (``message`` replaces its text when given)."""
    return CLIError(message or e.message, exit_code_for(e), e.reason)


def error_record(e: click.ClickException) -> dict[str, Any]:
    """The JSON error object printed under ``-o json``."""
    reason = getattr(e, "reason", "")
    if not reason:
        reason = (
            "usage"
            if isinstance(e, click.UsageError)
            else EXIT_CODES.get(e.exit_code, ("error", ""))[0]
        )
    return {"error": {"reason": reason, "message": e.format_message(), "exit_code": e.exit_code}}


def show_error(e: click.ClickException, as_json: bool) -> None:
    """Print ``e`` on stderr: click's text, or one JSON object."""
    if as_json:
        import json  # here, not at the top: a table needs none (coordctl's start-up time)

        click.echo(json.dumps(error_record(e), sort_keys=True), err=True)
    else:
        e.show()


@functools.cache
def _int64_types() -> frozenset[int]:
    from google.protobuf.descriptor import FieldDescriptor

    return frozenset(
        {
            FieldDescriptor.TYPE_INT64,
            FieldDescriptor.TYPE_UINT64,
            FieldDescriptor.TYPE_SINT64,
            FieldDescriptor.TYPE_FIXED64,
            FieldDescriptor.TYPE_SFIXED64,
        }
    )


def _numbers(desc: Any, d: dict[str, Any]) -> dict[str, Any]:
    """Turn the int64 fields MessageToDict printed as strings back into numbers."""
    int64 = _int64_types()
    for f in desc.fields:
        if f.name not in d:
            continue
        v = d[f.name]
        sub = f.message_type
        if sub is not None and sub.GetOptions().map_entry:
            vf = sub.fields_by_name["value"]
            if vf.message_type is not None:
                d[f.name] = {k: _numbers(vf.message_type, x) for k, x in v.items()}
            elif vf.type in int64:
                d[f.name] = {k: int(x) for k, x in v.items()}
        elif sub is not None and sub.full_name.startswith("google.protobuf."):
            continue  # well-known types have their own JSON forms
        elif sub is not None:
            d[f.name] = [_numbers(sub, x) for x in v] if isinstance(v, list) else _numbers(sub, v)
        elif f.type in int64:
            d[f.name] = [int(x) for x in v] if isinstance(v, list) else int(v)
    return d


def proto_dict(msg: Message) -> dict[str, Any]:
    """A wire message as JSON-ready data: proto field names, int64 as numbers."""
    from google.protobuf.json_format import MessageToDict

    out: dict[str, Any] = MessageToDict(msg, preserving_proto_field_name=True)
    return _numbers(msg.DESCRIPTOR, out)


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
        import json

        click.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        click.echo(table(headers, rows))
