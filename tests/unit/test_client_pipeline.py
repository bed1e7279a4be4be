"""KV.Pipeline on the client's side (coord.client.pipeline, Client._kv) against an
in-process fake KV server: batching, per-request errors, a broken stream, a server
without the method, when the Client uses the pipe rather than unary calls, timeouts."""

from __future__ import annotations

import queue
import threading
import time
import types
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import grpc
import pytest

from coord import errors
from coord.client import Client, pipeline
from coord.client.errors import translate
from coord.client.pipeline import Closed, Failure, Pipe, Unsupported
from coord.testing import wait_until
from coord.v1 import cluster_pb2, cluster_pb2_grpc, kv_pb2, kv_pb2_grpc

WAIT_S = 5.0  # bound of every wait on another thread: a failing test, never a hung one
N = 8


def echo(req: kv_pb2.PutRequest) -> kv_pb2.PutResponse:
    return kv_pb2.PutResponse(kv=kv_pb2.KeyValue(key=req.key, value=req.value))


def put_req(i: int) -> kv_pb2.PutRequest:
    return kv_pb2.PutRequest(key=f"k{i}".encode(), value=f"v{i}".encode())


class FakeKV(kv_pb2_grpc.KVServicer):
    """Put echoes key and value. Pipeline answers each op in a message of its own, the
    ops of one request in reverse order; ops whose key is in ``errors`` get that error;
    ``hold*`` ops are answered only just before the next op's answer."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.unary_puts = 0
        self.streams = 0
        self.batches: list[list[kv_pb2.PipelineOp]] = []
        self.errors: dict[bytes, kv_pb2.PipelineError] = {}
        self.abort_after = 0  # >0: the first stream aborts once it has received this many ops
        self.abort_code = grpc.StatusCode.UNAVAILABLE
        self.ended = threading.Event()  # a stream ended because the client ended its side
        self.unary_barrier: threading.Barrier | None = None  # unary Puts wait for each other
        self.unary_waits_for_pipeline = False  # a unary Put waits for an op on Pipeline
        self.pipelined = threading.Event()
        self.methods: list[str] = []  # methods asked of the server without Pipeline

    def Put(self, request: kv_pb2.PutRequest, context: grpc.ServicerContext) -> kv_pb2.PutResponse:
        with self.lock:
            self.unary_puts += 1
        if self.unary_barrier is not None:
            self.unary_barrier.wait(WAIT_S)
        if self.unary_waits_for_pipeline:
            self.pipelined.wait(WAIT_S)
        return echo(request)

    def Pipeline(
        self, request_iterator: Iterator[kv_pb2.PipelineRequest], context: grpc.ServicerContext
    ) -> Iterator[kv_pb2.PipelineResponse]:
        with self.lock:
            self.streams += 1
            abort_after = self.abort_after if self.streams == 1 else 0
        received = 0
        held: list[kv_pb2.PipelineOp] = []
        for req in request_iterator:
            with self.lock:
                self.batches.append(list(req.ops))
            self.pipelined.set()
            received += len(req.ops)
            if abort_after:
                if received >= abort_after:
                    context.abort(self.abort_code, "node going away")
                continue
            for op in reversed(req.ops):
                if op.put.key.startswith(b"hold"):
                    held.append(op)
                    continue
                for done in [*held, op]:
                    yield kv_pb2.PipelineResponse(results=[self.result(done)])
                held.clear()
        self.ended.set()

    def result(self, op: kv_pb2.PipelineOp) -> kv_pb2.PipelineResult:
        err = self.errors.get(op.put.key)
        if err is not None:
            return kv_pb2.PipelineResult(tag=op.tag, error=err)
        return kv_pb2.PipelineResult(tag=op.tag, put=echo(op.put))


class FakeCluster(cluster_pb2_grpc.ClusterServicer):
    def __init__(self, address: str) -> None:
        self.address = address

    def GetLeader(
        self, request: cluster_pb2.GetLeaderRequest, context: grpc.ServicerContext
    ) -> cluster_pb2.GetLeaderResponse:
        return cluster_pb2.GetLeaderResponse(leader_id="n1", leader_api_address=self.address)


class OldKV(grpc.GenericRpcHandler):
    """KV as a server older than Pipeline serves it: Put only (records what is asked)."""

    def __init__(self, fake: FakeKV) -> None:
        self.fake = fake
        self.put = grpc.unary_unary_rpc_method_handler(
            fake.Put,
            request_deserializer=kv_pb2.PutRequest.FromString,
            response_serializer=kv_pb2.PutResponse.SerializeToString,
        )

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        method: str = details.method
        self.fake.methods.append(method)
        return self.put if method == "/coord.v1.KV/Put" else None


@contextmanager
def serving(fake: FakeKV, with_pipeline: bool = True) -> Iterator[str]:
    server = grpc.server(ThreadPoolExecutor(max_workers=32))
    if with_pipeline:
        kv_pb2_grpc.add_KVServicer_to_server(fake, server)
    else:
        server.add_generic_rpc_handlers((OldKV(fake),))
    address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    cluster_pb2_grpc.add_ClusterServicer_to_server(FakeCluster(address), server)  # type: ignore[abstract]
    server.start()
    try:
        yield address
    finally:
        server.stop(None).wait(WAIT_S)


@pytest.fixture
def fake() -> FakeKV:
    return FakeKV()  # type: ignore[abstract]


@pytest.fixture
def address(fake: FakeKV) -> Iterator[str]:
    with serving(fake) as address:
        yield address


@pytest.fixture
def channel(address: str) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(address) as ch:
        yield ch


@pytest.fixture
def pipe(channel: grpc.Channel) -> Iterator[Pipe]:
    p = Pipe(channel)
    yield p
    p.close()


def concurrently(n: int, fn: Callable[[int], Any]) -> list[Any]:
    """``fn(i)`` for i < n, on n threads released together: each result or exception."""
    start = threading.Barrier(n)

    def go(i: int) -> Any:
        start.wait(WAIT_S)
        return fn(i)

    with ThreadPoolExecutor(n) as ex:
        futures = [ex.submit(go, i) for i in range(n)]
        return [f.exception(3 * WAIT_S) or f.result() for f in futures]


def gated_queue(expect: int) -> type[queue.SimpleQueue[Any]]:
    """A SimpleQueue whose blocking get() waits until ``expect`` requests were put: the
    pipe's sender then finds them all queued (deterministic batching)."""
    cond = threading.Condition()
    puts = [0]

    class Gated(queue.SimpleQueue[Any]):
        def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
            super().put(item, block, timeout)
            if item is not None:
                with cond:
                    puts[0] += 1
                    cond.notify_all()

        def get(self, block: bool = True, timeout: float | None = None) -> Any:
            with cond:
                cond.wait_for(lambda: puts[0] >= expect, WAIT_S)
            return super().get(block, timeout)

    return Gated


def test_requests_queued_together_share_a_message_and_find_their_own_answers(
    monkeypatch: pytest.MonkeyPatch, fake: FakeKV, channel: grpc.Channel
) -> None:
    shim = types.SimpleNamespace(SimpleQueue=gated_queue(N), Empty=queue.Empty)
    monkeypatch.setattr(pipeline, "queue", shim)
    p = Pipe(channel)
    try:
        results = concurrently(N, lambda i: p.call("put", put_req(i), WAIT_S))
    finally:
        p.close()
    for i, resp in enumerate(results):  # answered one a message, in reverse order
        assert isinstance(resp, kv_pb2.PutResponse), resp
        assert (resp.kv.key, resp.kv.value) == (f"k{i}".encode(), f"v{i}".encode())
    assert max(len(b) for b in fake.batches) > 1
    tags = [op.tag for b in fake.batches for op in b]
    assert len(tags) == N == len(set(tags))
    assert fake.streams == 1


def test_an_error_result_fails_its_own_request_only(fake: FakeKV, pipe: Pipe, address: str) -> None:
    fake.errors[b"k1"] = kv_pb2.PipelineError(
        code="FAILED_PRECONDITION",
        reason="not_leader",
        message="not the leader",
        leader_id="n2",
        leader_address="127.0.0.1:1",
    )
    fake.errors[b"k2"] = kv_pb2.PipelineError(code="INVALID_ARGUMENT", message="key too long")
    out = concurrently(4, lambda i: pipe.call("put", put_req(i), WAIT_S))
    assert [o.kv.key for o in (out[0], out[3])] == [b"k0", b"k3"]
    assert isinstance(out[1], Failure) and out[1].code() == grpc.StatusCode.FAILED_PRECONDITION
    not_leader = translate(out[1], address)
    assert isinstance(not_leader, errors.NotLeader) and not_leader.retryable
    assert (not_leader.leader_id, not_leader.leader_address) == ("n2", "127.0.0.1:1")
    assert isinstance(out[2], Failure) and out[2].code() == grpc.StatusCode.INVALID_ARGUMENT
    invalid = translate(out[2], address)
    assert isinstance(invalid, errors.InvalidArgument) and invalid.message == "coord: key too long"
    assert pipe.call("put", put_req(5), WAIT_S).kv.key == b"k5"  # the stream stayed
    assert not pipe.dead and fake.streams == 1


def test_a_broken_stream_fails_every_waiting_request(fake: FakeKV, channel: grpc.Channel) -> None:
    fake.abort_after = 5  # every caller is waiting when the server aborts
    p = Pipe(channel)
    try:
        out = concurrently(5, lambda i: p.call("put", put_req(i), WAIT_S))
        assert p.dead and not p.unsupported
        with pytest.raises(Closed):  # a dead pipe takes nothing more (nothing sent)
            p.call("put", put_req(9), WAIT_S)
    finally:
        p.close()
    for failure in out:
        assert isinstance(failure, Failure), failure
        assert failure.code() == grpc.StatusCode.UNAVAILABLE
        # The stream's own status is not the requests' outcome: unknown, retried.
        assert "UNAVAILABLE: node going away" in failure.details()
    assert isinstance(translate(out[0], "ep"), errors.Unavailable)
    fresh = Pipe(channel)
    try:
        assert fresh.call("put", put_req(7), WAIT_S).kv.key == b"k7"
    finally:
        fresh.close()
    assert fake.streams == 2


def test_a_server_without_pipeline_is_unsupported(fake: FakeKV) -> None:
    with serving(fake, with_pipeline=False) as address, grpc.insecure_channel(address) as ch:
        p = Pipe(ch)
        try:
            with pytest.raises(Unsupported):
                p.call("put", put_req(0), WAIT_S)
            assert p.unsupported and p.dead
            with pytest.raises(Unsupported):  # and stays so
                p.call("put", put_req(1), WAIT_S)
        finally:
            p.close()
    assert "/coord.v1.KV/Pipeline" in fake.methods and fake.unary_puts == 0


def test_the_client_falls_back_to_unary_calls_without_pipeline(fake: FakeKV) -> None:
    fake.unary_barrier = threading.Barrier(N)  # all N puts in flight at once: some try the pipe
    with (
        serving(fake, with_pipeline=False) as address,
        Client([address], timeout_s=3 * WAIT_S, attempt_timeout_s=2 * WAIT_S) as c,
    ):
        out = concurrently(N, lambda i: c.put(f"k{i}", f"v{i}"))
    for i, resp in enumerate(out):
        assert isinstance(resp, kv_pb2.PutResponse), resp
        assert (resp.kv.key, resp.kv.value) == (f"k{i}".encode(), f"v{i}".encode())
    assert "/coord.v1.KV/Pipeline" in fake.methods
    assert fake.unary_puts == N  # every put once, as a unary call


def test_the_client_pipelines_concurrent_requests(fake: FakeKV, address: str) -> None:
    fake.unary_waits_for_pipeline = True  # a unary put stays in flight until one is pipelined
    with Client([address], timeout_s=3 * WAIT_S, attempt_timeout_s=2 * WAIT_S) as c:
        out = concurrently(N, lambda i: c.put(f"k{i}", f"v{i}"))
    for i, resp in enumerate(out):
        assert isinstance(resp, kv_pb2.PutResponse), resp
        assert (resp.kv.key, resp.kv.value) == (f"k{i}".encode(), f"v{i}".encode())
    pipelined = [op.put.key for b in fake.batches for op in b]
    assert pipelined and fake.streams == 1
    assert len(pipelined) + fake.unary_puts == N  # each put served once
    ids = [op.put.request_id for b in fake.batches for op in b]
    assert all(ids) and len(set(ids)) == len(ids)


def test_a_lone_request_is_a_unary_call(fake: FakeKV, address: str) -> None:
    with Client([address]) as c:
        for i in range(5):
            assert c.put(f"k{i}", f"v{i}").kv.key == f"k{i}".encode()
    assert fake.unary_puts == 5
    assert fake.streams == 0 and not fake.batches


def test_an_unanswered_request_times_out_and_the_pipe_stays(fake: FakeKV, pipe: Pipe) -> None:
    t0 = time.monotonic()
    with pytest.raises(Failure) as timed_out:
        pipe.call("put", kv_pb2.PutRequest(key=b"hold", value=b"x"), 0.3)
    elapsed = time.monotonic() - t0
    assert timed_out.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert 0.25 <= elapsed < 3.0
    assert isinstance(translate(timed_out.value, "ep"), errors.DeadlineExceeded)
    # The server is told what is left of the caller's deadline when the request is sent.
    assert 250 <= fake.batches[0][0].timeout_ms <= 300
    assert not pipe.dead
    # The server answers the held request first (late): it reaches no one, not this caller.
    resp = pipe.call("put", kv_pb2.PutRequest(key=b"after", value=b"y"), WAIT_S)
    assert (resp.kv.key, resp.kv.value) == (b"after", b"y")
    assert fake.streams == 1


@pytest.mark.parametrize(
    ("status", "seen"),
    [
        # Any end of the stream but a refusal of it leaves the outcome unknown: retried.
        (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAVAILABLE),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE),
        (grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNAVAILABLE),
        (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.PERMISSION_DENIED),
    ],
)
def test_a_stream_status_is_not_the_outcome_of_the_requests_on_it(
    fake: FakeKV, channel: grpc.Channel, status: grpc.StatusCode, seen: grpc.StatusCode
) -> None:
    """A write on a stream that ended INVALID_ARGUMENT may have applied: reporting the
    stream's status as the write's (not retryable) would state an outcome nobody saw."""
    fake.abort_after, fake.abort_code = 3, status
    p = Pipe(channel)
    try:
        out = concurrently(3, lambda i: p.call("put", put_req(i), WAIT_S))
    finally:
        p.close()
    for failure in out:
        assert isinstance(failure, Failure), failure
        assert failure.code() == seen
    assert translate(out[0], "ep").retryable == (seen == grpc.StatusCode.UNAVAILABLE)


def test_an_idle_pipe_ends_its_stream_and_the_next_request_opens_another(
    monkeypatch: pytest.MonkeyPatch, fake: FakeKV, channel: grpc.Channel
) -> None:
    """A pipe nobody uses ends its stream (a Client never closed leaves no stream and no
    threads behind for long); a request after that is refused unsent (Closed)."""
    monkeypatch.setattr(pipeline, "IDLE_S", 0.2)
    p = Pipe(channel)
    try:
        assert p.call("put", put_req(1), WAIT_S).kv.key == b"k1"
        assert fake.ended.wait(WAIT_S), "the idle stream was not ended"
        wait_until(lambda: p.dead, WAIT_S, "the pipe to see its stream end")
        with pytest.raises(Closed):
            p.call("put", put_req(2), WAIT_S)
    finally:
        p.close()
    assert fake.streams == 1


def test_a_request_whose_caller_gave_up_is_not_sent(fake: FakeKV, channel: grpc.Channel) -> None:
    """A request that timed out before it was sent is dropped, not served late."""
    gate = threading.Event()  # nothing is pulled from the pipe until the first caller gave up
    p = GatedPipe(channel, gate)
    try:
        with pytest.raises(Failure):
            p.call("put", put_req(1), 0.2)
        gate.set()
        assert p.call("put", put_req(2), WAIT_S).kv.key == b"k2"
    finally:
        p.close()
    sent = [op.put.key for batch in fake.batches for op in batch]
    assert sent == [b"k2"], sent


class GatedPipe(Pipe):
    """A Pipe whose request stream starts only once ``gate`` is set."""

    def __init__(self, channel: grpc.Channel, gate: threading.Event) -> None:
        self._gate = gate
        super().__init__(channel)

    def _requests(self) -> Iterator[kv_pb2.PipelineRequest]:
        self._gate.wait(WAIT_S)
        yield from super()._requests()


def test_queued_requests_over_the_message_limit_go_in_several_messages(
    fake: FakeKV, channel: grpc.Channel
) -> None:
    """Eight 1 MiB puts queued together: one message would be over the 4 MiB limit (the
    whole stream would fail RESOURCE_EXHAUSTED); each message stays near MAX_BATCH_BYTES."""
    gate = threading.Event()
    p = GatedPipe(channel, gate)
    big = b"v" * (1024 * 1024 - 100)
    queued = threading.Semaphore(0)

    def put(i: int) -> Any:
        queued.release()
        return p.call("put", kv_pb2.PutRequest(key=f"k{i}".encode(), value=big), WAIT_S)

    try:
        with ThreadPoolExecutor(8) as ex:
            futures = [ex.submit(put, i) for i in range(8)]
            for _ in range(8):
                assert queued.acquire(timeout=WAIT_S)
            wait_until(lambda: len(p._waiting) == 8, WAIT_S, "eight requests queued")
            gate.set()
            answers = [f.result(3 * WAIT_S) for f in futures]
    finally:
        p.close()
    assert [a.kv.key for a in answers] == [f"k{i}".encode() for i in range(8)]
    assert len(fake.batches) >= 8 // (pipeline.MAX_BATCH_BYTES // len(big))
    for batch in fake.batches:  # under the limit together, or one request alone
        sizes = [op.ByteSize() for op in batch]
        assert len(sizes) == 1 or sum(sizes) <= pipeline.MAX_BATCH_BYTES, sizes


def test_server_results_are_split_into_messages_under_the_limit() -> None:
    from coord.server.api.pipeline import MAX_RESPONSE_BYTES, _take_batch

    def result(tag: int, size: int) -> kv_pb2.PipelineResult:
        return kv_pb2.PipelineResult(
            tag=tag, range=kv_pb2.RangeResponse(kvs=[kv_pb2.KeyValue(key=b"k", value=b"v" * size)])
        )

    third = MAX_RESPONSE_BYTES // 3
    ready = [result(1, third), result(2, third), result(3, 3 * MAX_RESPONSE_BYTES), result(4, 10)]
    messages = []
    while ready:
        batch, ready = _take_batch(ready)
        messages.append([r.tag for r in batch])
    # Under the limit together, or alone (one result may be larger, as a unary answer).
    assert messages == [[1, 2], [3], [4]]
