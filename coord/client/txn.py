"""Builders for :meth:`coord.client.Client.txn`: compares and operations, etcd3-style.

::

    from coord.client import txn as t

    resp = c.txn(
        compares=[t.mod_revision("shards/map") == rev, t.value("shards/owner") == "node-1"],
        success=[t.put("shards/map", new_map), t.put("shards/owner", "node-2")],
        failure=[],
    )
    resp.succeeded      # True: every compare held and the success branch was applied

A compare is ``target(key) <op> given`` with ``==``, ``!=``, ``<`` or ``>``:
:func:`value`, :func:`mod_revision` and :func:`version`; :func:`exists` and
:func:`absent` test existence. On a missing key mod_revision and version are 0 and
every value compare is false (``!=`` too: compare :func:`absent` for absence).
The builders make the wire messages (``kv_pb2.Compare``, ``kv_pb2.TxnOp``), which
``Client.txn`` also takes as they are.
"""

from __future__ import annotations

from typing import Any

from coord.v1 import kv_pb2

__all__ = ["absent", "delete", "exists", "mod_revision", "put", "value", "version"]


def _b(v: bytes | str) -> bytes:
    return v.encode() if isinstance(v, str) else v


class _Target:
    """One key's value, mod_revision or version, compared with ``==``, ``!=``, ``<``, ``>``
    into a ``kv_pb2.Compare``."""

    __hash__ = None  # type: ignore[assignment]  # == builds a compare

    def __init__(self, field: str, key: bytes | str) -> None:
        self._field = field
        self._key = _b(key)

    def _compare(self, result: int, given: Any) -> kv_pb2.Compare:
        c = kv_pb2.Compare(key=self._key, result=result)  # type: ignore[arg-type]
        setattr(c, self._field, _b(given) if self._field == "value" else int(given))
        return c

    def __eq__(self, given: object) -> kv_pb2.Compare:  # type: ignore[override]
        return self._compare(kv_pb2.Compare.EQUAL, given)

    def __ne__(self, given: object) -> kv_pb2.Compare:  # type: ignore[override]
        return self._compare(kv_pb2.Compare.NOT_EQUAL, given)

    def __lt__(self, given: object) -> kv_pb2.Compare:
        return self._compare(kv_pb2.Compare.LESS, given)

    def __gt__(self, given: object) -> kv_pb2.Compare:
        return self._compare(kv_pb2.Compare.GREATER, given)


def value(key: bytes | str) -> _Target:
    """The key's value (bytes; a str is UTF-8). False on a missing key, whatever the op."""
    return _Target("value", key)


def mod_revision(key: bytes | str) -> _Target:
    """The revision of the key's last change (0: missing)."""
    return _Target("mod_revision", key)


def version(key: bytes | str) -> _Target:
    """The number of puts since the key was created (0: missing)."""
    return _Target("version", key)


def exists(key: bytes | str) -> kv_pb2.Compare:
    """Holds when the key exists."""
    return kv_pb2.Compare(key=_b(key), result=kv_pb2.Compare.EQUAL, exists=True)


def absent(key: bytes | str) -> kv_pb2.Compare:
    """Holds when the key does not exist."""
    return kv_pb2.Compare(key=_b(key), result=kv_pb2.Compare.EQUAL, exists=False)


def put(key: bytes | str, value: bytes | str, session: Any = None) -> kv_pb2.TxnOp:
    """Put ``key``; with ``session`` (a started Session, or its id) bound to it: deleted
    when the session ends."""
    return kv_pb2.TxnOp(
        put=kv_pb2.PutRequest(key=_b(key), value=_b(value), session_id=session_id(session))
    )


def delete(key: bytes | str, prefix: bool = False) -> kv_pb2.TxnOp:
    """Delete ``key`` (with ``prefix``: every key starting with it)."""
    return kv_pb2.TxnOp(delete=kv_pb2.DeleteRequest(key=_b(key), prefix=prefix))


def session_id(session: Any) -> str:
    """A Session's id (a str is taken as the id; None: no session)."""
    if session is None:
        return ""
    if isinstance(session, str):
        return session
    return str(session.id)


def as_op(op: kv_pb2.TxnOp | kv_pb2.PutRequest | kv_pb2.DeleteRequest) -> kv_pb2.TxnOp:
    """An operation as the wire has it (a bare PutRequest or DeleteRequest is wrapped)."""
    if isinstance(op, kv_pb2.PutRequest):
        return kv_pb2.TxnOp(put=op)
    if isinstance(op, kv_pb2.DeleteRequest):
        return kv_pb2.TxnOp(delete=op)
    if isinstance(op, kv_pb2.TxnOp):
        return op
    raise TypeError(f"a transaction's operation is txn.put(...) or txn.delete(...), not {op!r}")


def as_compare(c: object) -> kv_pb2.Compare:
    """A compare as the wire has it (what value(k) == v and the others build)."""
    if isinstance(c, kv_pb2.Compare):
        return c
    raise TypeError(
        f"a compare is built like txn.value(key) == v, txn.mod_revision(key) < r or "
        f"txn.exists(key), not {c!r}"
    )
