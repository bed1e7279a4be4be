"""Transactions (``KV.Txn``): compare several keys, then apply one branch of puts and
deletes, atomically.

Semantics (docs/protocol.md, section 8; etcd's ``Txn`` where it is
silent):

- Every compare holds -> the ``success`` operations are applied, else the ``failure``
  ones (either may be empty). A compare on a missing key is well defined: ``exists`` is
  false, ``mod_revision`` and ``version`` are 0, and a **value compare is false**
  whatever its result (EQUAL and NOT_EQUAL alike: there is no value to compare, as in
  etcd); compare ``exists`` to test for absence.
- The branch is applied in one revision and recorded as one ``kv_txn`` event (the
  records put, the keys deleted); a branch that changes nothing (no put, every delete
  of a missing key) takes no revision and records nothing.
- A branch writes each key at most once: two puts of one key, or a put of a key that a
  delete of the same branch covers, are refused (one revision cannot order them).
- Everything is checked before anything changes; a refusal changes nothing.

:func:`check` is the static part (shape, sizes, overlaps): the server runs it before a
transaction reaches the log, and the state machine again (every replica refuses the
same command the same way). :func:`holds` decides one compare.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

from coord.errors import InvalidArgument
from coord.state import limits
from coord.state.kv import validate_key, validate_value
from coord.v1 import kv_pb2

_ORDER: dict[int, Callable[[Any, Any], bool]] = {
    kv_pb2.Compare.EQUAL: operator.eq,
    kv_pb2.Compare.NOT_EQUAL: operator.ne,
    kv_pb2.Compare.LESS: operator.lt,
    kv_pb2.Compare.GREATER: operator.gt,
}
TARGETS = ("value", "mod_revision", "version", "exists")


def size_of(req: kv_pb2.TxnRequest) -> int:
    """The bytes of every key and value the transaction names (what MAX_TXN_BYTES bounds)."""
    total = 0
    for c in req.compares:
        total += len(c.key) + len(c.value)
    for op in (*req.success, *req.failure):
        if op.HasField("put"):
            total += len(op.put.key) + len(op.put.value)
        elif op.HasField("delete"):
            total += len(op.delete.key)
    return total


def check(req: kv_pb2.TxnRequest) -> None:
    """Raise InvalidArgument, naming the offending part and saying what to do, for a
    transaction that is too large or malformed."""
    count = len(req.compares) + len(req.success) + len(req.failure)
    if count > limits.MAX_TXN_OPS:
        raise InvalidArgument(
            f"the transaction has {count} compares and operations, the limit is "
            f"{limits.MAX_TXN_OPS}: split it, or keep related values under one key"
        )
    size = size_of(req)
    if size > limits.MAX_TXN_BYTES:
        raise InvalidArgument(
            f"the transaction names {size} bytes of keys and values, the limit is "
            f"{limits.MAX_TXN_BYTES} ({limits.MAX_TXN_BYTES // 1024} KiB): split it, or keep "
            "large blobs elsewhere and store a reference"
        )
    for i, c in enumerate(req.compares):
        _check_compare(f"compares[{i}]", c)
    _check_branch("success", req.success)
    _check_branch("failure", req.failure)


def _check_compare(where: str, c: kv_pb2.Compare) -> None:
    _named(where, validate_key, c.key)
    target = c.WhichOneof("target")
    if target is None:
        raise InvalidArgument(f"{where}: a compare needs a target: one of {', '.join(TARGETS)}")
    if c.result not in _ORDER:
        raise InvalidArgument(
            f"{where}: result {c.result} is unknown: use EQUAL, NOT_EQUAL, LESS or GREATER"
        )
    if target == "exists" and c.result not in (kv_pb2.Compare.EQUAL, kv_pb2.Compare.NOT_EQUAL):
        raise InvalidArgument(
            f"{where}: an exists compare takes EQUAL or NOT_EQUAL, not "
            f"{kv_pb2.Compare.Result.Name(c.result)}"
        )


def _check_branch(branch: str, ops: Sequence[kv_pb2.TxnOp]) -> None:
    puts: dict[bytes, str] = {}
    deletes: list[tuple[str, bytes, bool]] = []
    for i, op in enumerate(ops):
        where = f"{branch}[{i}]"
        kind = op.WhichOneof("op")
        if kind == "put":
            p = op.put
            _named(where, validate_key, p.key)
            _named(where, validate_value, p.value)
            _no_own_options(where, "put", p.request_id, p.HasField("expected_mod_revision"),
                            p.prev_kv)  # fmt: skip
            if p.key in puts:
                raise InvalidArgument(
                    f"{where}: key {p.key!r} is put twice in one branch ({puts[p.key]} too): "
                    "a transaction writes each key at most once"
                )
            puts[p.key] = where
        elif kind == "delete":
            d = op.delete
            _named(where, validate_key, d.key, allow_empty=d.prefix)
            _no_own_options(where, "delete", d.request_id, d.HasField("expected_mod_revision"),
                            d.prev_kv)  # fmt: skip
            deletes.append((where, d.key, d.prefix))
        else:
            raise InvalidArgument(
                f"{where}: an operation is a put or a delete, and this one is neither"
            )
    for where, key, prefix in deletes:
        covered = [k for k in puts if k.startswith(key)] if prefix else [key] * (key in puts)
        if covered:
            hit = covered[0]
            raise InvalidArgument(
                f"{where}: the delete of {key!r}{' (prefix)' if prefix else ''} covers key "
                f"{hit!r}, which {puts[hit]} puts: a transaction writes each key at most once"
            )


def _no_own_options(where: str, kind: str, request_id: str, expected: bool, prev_kv: bool) -> None:
    if request_id:
        raise InvalidArgument(
            f"{where}: a {kind} inside a transaction has no request_id: give the "
            "transaction's request_id"
        )
    if expected:
        raise InvalidArgument(
            f"{where}: a {kind} inside a transaction has no expected_mod_revision: put the "
            "condition in the transaction's compares (mod_revision EQUAL)"
        )
    if prev_kv:
        raise InvalidArgument(
            f"{where}: prev_kv is not available inside a transaction: read the keys first, "
            "and compare their mod_revision"
        )


def _named(where: str, fn: Callable[..., None], *args: Any, **kwargs: Any) -> None:
    """``fn(*args, **kwargs)``, its InvalidArgument prefixed with ``where``."""
    try:
        fn(*args, **kwargs)
    except InvalidArgument as e:
        raise InvalidArgument(f"{where}: {e.message.removeprefix('coord: ')}") from None


def holds(c: kv_pb2.Compare, kv: kv_pb2.KeyValue | None) -> bool:
    """Whether compare ``c`` holds for the key's record ``kv`` (None: the key is missing)."""
    target = c.WhichOneof("target")
    order = _ORDER[c.result]
    if target == "exists":
        return order(kv is not None, c.exists)
    if target == "value":
        return kv is not None and order(kv.value, c.value)
    if target == "mod_revision":
        return order(kv.mod_revision if kv is not None else 0, c.mod_revision)
    return order(kv.version if kv is not None else 0, c.version)
