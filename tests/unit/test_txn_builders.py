"""The transaction builders of the client (coord.client.txn) and ``coordctl kv txn``'s
spec parser: the wire messages they make, and clear refusals of what they cannot make."""

from __future__ import annotations

import pytest

from coord.cli.ctl_txn import SpecError, parse_spec
from coord.cli.output import EXIT_CONFIG
from coord.client import txn as t
from coord.client.client import Client
from coord.v1 import kv_pb2

C = kv_pb2.Compare


def test_compares_read_as_the_condition_they_build() -> None:
    assert (t.value("k") == "v") == C(key=b"k", result=C.EQUAL, value=b"v")
    assert (t.value(b"k") != b"v") == C(key=b"k", result=C.NOT_EQUAL, value=b"v")
    assert (t.mod_revision("k") < 7) == C(key=b"k", result=C.LESS, mod_revision=7)
    assert (t.version("k") > 0) == C(key=b"k", result=C.GREATER, version=0)
    assert t.exists("k") == C(key=b"k", result=C.EQUAL, exists=True)
    assert t.absent("k") == C(key=b"k", result=C.EQUAL, exists=False)
    assert t.absent("k").HasField("exists")  # exists=False is set, not absent from the wire


def test_operations_and_sessions() -> None:
    class FakeSession:
        id = "s1f"

    assert t.put("k", "v", session=FakeSession()) == kv_pb2.TxnOp(
        put=kv_pb2.PutRequest(key=b"k", value=b"v", session_id="s1f")
    )
    assert t.put("k", "v", session="s2").put.session_id == "s2"
    assert t.delete("p/", prefix=True) == kv_pb2.TxnOp(
        delete=kv_pb2.DeleteRequest(key=b"p/", prefix=True)
    )
    assert t.as_op(kv_pb2.PutRequest(key=b"k")).put.key == b"k"


def test_what_is_not_a_compare_or_an_operation_is_a_type_error_before_any_call() -> None:
    c = Client("127.0.0.1:1")  # never dialled: the request is refused while being built
    with pytest.raises(TypeError, match="a compare is built like"):
        c.txn(compares=[t.value("k")])  # type: ignore[list-item]  # no == v
    with pytest.raises(TypeError, match=r"txn\.put"):
        c.txn(success=[t.value("k") == "v"])  # type: ignore[list-item]
    c.close()


SPEC = """
compares:
  - {key: shards/map, mod_revision: 12}
  - {key: shards/owner, value: node-1, result: "!="}
  - {key: shards/lock, exists: false}
success:
  - {put: shards/map, value: m2}
  - {delete: shards/old/, prefix: true}
failure: []
"""


def test_a_spec_parses_into_the_transaction_it_says() -> None:
    req = parse_spec(SPEC)
    assert list(req.compares) == [
        C(key=b"shards/map", result=C.EQUAL, mod_revision=12),
        C(key=b"shards/owner", result=C.NOT_EQUAL, value=b"node-1"),
        C(key=b"shards/lock", result=C.EQUAL, exists=False),
    ]
    assert list(req.success) == [t.put("shards/map", "m2"), t.delete("shards/old/", prefix=True)]
    assert not req.failure
    assert parse_spec('{"success": [{"put": "a", "value": 1}]}').success[0].put.value == b"1"


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("[1, 2]", "the spec: is a mapping"),
        ("{compares: [], extra: 1}", "unknown field 'extra'"),
        ("compares: {key: a}", "compares: is a list"),
        ("compares: [{key: a}]", "compares[0]: a compare has exactly one of"),
        ("compares: [{key: a, value: x, version: 2}]", "exactly one of"),
        ("compares: [{key: a, version: x}]", "compares[0]: version is an integer"),
        ("compares: [{key: a, exists: 1}]", "exists is true or false"),
        ("compares: [{key: a, value: x, result: '~'}]", "is not one of ==, !=, <, >"),
        ("compares: [{key: a, value: x, op: '=='}]", "unknown field 'op'"),
        ("success: [{put: a}]", "success[0]: a put needs a value"),
        ("failure: [{get: a}]", "failure[0]: an operation is"),
        ("success: [{delete: a, prefix: 'yes'}]", "prefix is true or false"),
        ("success: [{put: [a], value: x}]", "key is a string"),
        ("compares: [", "is neither JSON nor YAML"),
    ],
)
def test_a_bad_spec_names_the_part_and_exits_3(spec: str, says: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(spec)
    assert says in info.value.message and info.value.exit_code == EXIT_CONFIG
