"""``coordctl kv txn``: a transaction from a JSON or YAML spec (a file, or stdin).

The spec (YAML is a superset of JSON, so either parses)::

    compares:                                # all must hold ...
      - {key: shards/map, mod_revision: 12}  # result: == (default), !=, <, >
      - {key: shards/owner, value: node-1}
      - {key: shards/lock, exists: false}    # a value compare on a missing key is false
    success:                                 # ... then these, else `failure`
      - {put: shards/map, value: "{...}"}
      - {delete: shards/old/, prefix: true}
    failure: []

Exit 0 when the compares held, 6 (``compare_failed``) when they did not (the failure
branch, if any, was applied: the output says what it did), 3 for a spec the CLI or
the cluster refuses (nothing applied).
"""

from __future__ import annotations

from typing import Any

import click
import yaml

from coord.cli.ctl import Ctx, _header, _kv_dict, handles_errors, kv, pass_ctx
from coord.cli.output import EXIT_CONFIG, EXIT_REFUSED, CLIError, emit, text
from coord.v1 import kv_pb2

_RESULTS = {
    "==": kv_pb2.Compare.EQUAL, "=": kv_pb2.Compare.EQUAL, "EQUAL": kv_pb2.Compare.EQUAL,
    "!=": kv_pb2.Compare.NOT_EQUAL, "NOT_EQUAL": kv_pb2.Compare.NOT_EQUAL,
    "<": kv_pb2.Compare.LESS, "LESS": kv_pb2.Compare.LESS,
    ">": kv_pb2.Compare.GREATER, "GREATER": kv_pb2.Compare.GREATER,
}  # fmt: skip
_TARGETS = ("value", "mod_revision", "version", "exists")
_FIELDS = {
    "compare": {"key", "result", *_TARGETS},
    "put": {"put", "value"},
    "delete": {"delete", "prefix"},
}


class SpecError(CLIError):
    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"txn spec: {where}: {message}", EXIT_CONFIG, "invalid_argument")


def _text(where: str, v: Any, what: str) -> bytes:
    if isinstance(v, bool) or not isinstance(v, str | int | float):
        raise SpecError(where, f"{what} is a string, not {v!r}")
    return str(v).encode()


def _int(where: str, v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise SpecError(where, f"{what} is an integer, not {v!r}")
    return v


def _known(where: str, item: dict[str, Any], kind: str) -> None:
    extra = sorted(set(item) - _FIELDS[kind])
    if extra:
        raise SpecError(
            where, f"unknown field {extra[0]!r} (a {kind} takes {', '.join(sorted(_FIELDS[kind]))})"
        )


def _compare(where: str, item: Any) -> kv_pb2.Compare:
    if not isinstance(item, dict) or "key" not in item:
        raise SpecError(where, "a compare is a mapping with a key and one target")
    _known(where, item, "compare")
    targets = [t for t in _TARGETS if t in item]
    if len(targets) != 1:
        raise SpecError(where, f"a compare has exactly one of {', '.join(_TARGETS)}")
    result = str(item.get("result", "==")).upper()
    if result not in _RESULTS:
        raise SpecError(where, f"result {item['result']!r} is not one of ==, !=, <, >")
    c = kv_pb2.Compare(key=_text(where, item["key"], "key"), result=_RESULTS[result])
    (target,) = targets
    v = item[target]
    if target == "value":
        c.value = _text(where, v, "value")
    elif target == "exists":
        if not isinstance(v, bool):
            raise SpecError(where, f"exists is true or false, not {v!r}")
        c.exists = v
    else:
        setattr(c, target, _int(where, v, target))
    return c


def _op(where: str, item: Any) -> kv_pb2.TxnOp:
    if isinstance(item, dict) and "put" in item:
        _known(where, item, "put")
        if "value" not in item:
            raise SpecError(where, "a put needs a value")
        return kv_pb2.TxnOp(
            put=kv_pb2.PutRequest(
                key=_text(where, item["put"], "key"), value=_text(where, item["value"], "value")
            )
        )
    if isinstance(item, dict) and "delete" in item:
        _known(where, item, "delete")
        prefix = item.get("prefix", False)
        if not isinstance(prefix, bool):
            raise SpecError(where, f"prefix is true or false, not {prefix!r}")
        return kv_pb2.TxnOp(
            delete=kv_pb2.DeleteRequest(key=_text(where, item["delete"], "key"), prefix=prefix)
        )
    raise SpecError(where, "an operation is {put: KEY, value: V} or {delete: KEY, prefix: BOOL}")


def parse_spec(source: str) -> kv_pb2.TxnRequest:
    """A transaction from its JSON or YAML text; SpecError (exit 3) naming the part."""
    try:
        data = yaml.safe_load(source)
    except yaml.YAMLError as e:
        raise SpecError("the spec", f"is neither JSON nor YAML ({e})") from None
    if not isinstance(data, dict):
        raise SpecError("the spec", "is a mapping with compares, success and failure")
    extra = sorted(set(data) - {"compares", "success", "failure"})
    if extra:
        raise SpecError("the spec", f"unknown field {extra[0]!r} (compares, success, failure)")
    req = kv_pb2.TxnRequest()
    for name in ("compares", "success", "failure"):
        items = data.get(name) or []
        if not isinstance(items, list):
            raise SpecError(name, "is a list")
        for i, item in enumerate(items):
            where = f"{name}[{i}]"
            if name == "compares":
                req.compares.append(_compare(where, item))
            else:
                getattr(req, name).append(_op(where, item))
    return req


def _rows(resp: kv_pb2.TxnResponse, ops: Any) -> list[list[Any]]:
    result = "SUCCESS" if resp.succeeded else "FAILURE"
    rows: list[list[Any]] = []
    for op, r in zip(ops, resp.responses, strict=False):
        if op.HasField("put"):
            rows.append([result, "put", text(op.put.key), r.put.kv.mod_revision, "-"])
        else:
            key = text(op.delete.key) + (" (prefix)" if op.delete.prefix else "")
            rows.append([result, "delete", key, "-", r.delete.deleted])
    return rows or [[result, "-", "-", resp.header.revision, "-"]]


def _dict(resp: kv_pb2.TxnResponse) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    for r in resp.responses:
        if r.HasField("put"):
            out.append({"put": {"kv": _kv_dict(r.put.kv)}})
        else:
            out.append({"delete": {"deleted": r.delete.deleted}})
    return {"succeeded": resp.succeeded, "responses": out, "header": _header(resp.header)}


@kv.command("txn")
@click.argument("spec", type=click.File("r"), default="-")
@pass_ctx
@handles_errors
def kv_txn(ctx: Ctx, spec: Any) -> None:
    """A transaction from SPEC (a JSON or YAML file; - or none: stdin): if every compare
    holds, apply `success`, else `failure`, atomically.

    \b
    compares: [{key: K, value: V | mod_revision: R | version: N | exists: BOOL,
                result: == | != | < | >}]   (a value compare on a missing key is false)
    success:  [{put: K, value: V} | {delete: K, prefix: BOOL}]
    failure:  [...]

    Exit 6 (compare_failed) when the compares did not hold (the failure branch ran)."""
    req = parse_spec(spec.read())
    resp = ctx.client.txn(req.compares, req.success, req.failure)
    ops = req.success if resp.succeeded else req.failure
    emit(ctx.output, _dict(resp), ["RESULT", "OP", "KEY", "REVISION", "DELETED"], _rows(resp, ops))
    if not resp.succeeded:
        raise CLIError(
            f"the compares did not hold: the failure branch was applied ({len(ops)} operations)",
            EXIT_REFUSED,
            "compare_failed",
        )
