"""Session: a TTL lease kept alive in the background, with a local validity clock.

docs/design.md's safety argument, client side: a session is valid until
``send_time + TTL x (1 - drift)`` of the newest acknowledged keepalive, on this
process's validity clock (``coord.client.clock``: monotonic, counting suspend).
The leader acknowledges only after a commit made after the keepalive arrived, so
when validity ends here, the cluster may have expired the session and granted its
slots to others: stop acting as master.

Constructing a Session does no I/O: ``start()`` (or ``with``) opens it on the cluster
and starts three daemon threads: keepalives (``_keep_alive``: finds the leader with
``Client.find_leader`` and streams to it), the validity watchdog (``_watch_validity``)
and the callbacks' thread (``_run_callbacks``).

States (callbacks always fire, once per transition, in order, on one thread)::

    NEW --(start(): the cluster opened it)--> CONNECTED   (no callback)
    CONNECTED --(no ack for TTL/2, or the stream broke)--> SUSPENDED
    SUSPENDED --(an ack)--> CONNECTED
    CONNECTED/SUSPENDED --(validity ended, or the cluster said expired)--> LOST
    any --(close())--> CLOSED

LOST and CLOSED are final: open a new Session.

Step-down requests (switchover, an operator's resign, failback, member rm) arrive on
keepalive responses. For a holding taken with ``Member.campaign()`` the library ends
mastership (``Leadership.is_master()`` turns False) and resigns the slot at once, so
the successor is elected at once. An application that needs time to hand over passes
``on_stepdown``: it runs once per request on a thread of its own while the holding
stays master, for at most ``stepdown_grace_s``; the library resigns when it returns
or when the grace ends, whichever comes first (coord.client.election). A request
the cluster repeats (on every keepalive until it is answered) is handled once.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import queue
import threading
import warnings
from collections.abc import Callable, Iterator

import grpc

from coord import errors
from coord.client import clock
from coord.client.client import Client, new_request_id
from coord.client.errors import translate
from coord.v1 import election_pb2, election_pb2_grpc

LOAD_REPORT_GAP_S = 0.1  # a changed load is sent early, but at most this often

logger = logging.getLogger(__name__)


class SessionState(enum.Enum):
    NEW = "new"  # not started yet: no callback ever reports it
    CONNECTED = "connected"
    SUSPENDED = "suspended"
    LOST = "lost"
    CLOSED = "closed"


StateCallback = Callable[["Session", SessionState], None]
StepDownCallback = Callable[["Session", election_pb2.StepDown], None]
# A holding's own handler (Leadership): (request, revision it was read at).
StepDownHook = Callable[[election_pb2.StepDown, int], None]


class Session:
    """A session: ``client.session(ttl_s)`` (or ``Session(client, ttl_s)``) only stores
    its configuration; ``start()``, or entering it as a context manager, opens it on the
    cluster and starts its threads (keepalives, the validity watchdog, callbacks);
    ``close()``, or leaving the ``with`` block, closes it."""

    def __init__(
        self,
        client: Client,
        ttl_s: float = 5.0,
        name: str = "",
        drift: float = 0.02,
        on_state: StateCallback | None = None,
        on_stepdown: StepDownCallback | None = None,
        stepdown_grace_s: float = 5.0,
    ) -> None:
        """``on_stepdown``: how this application hands over when asked to step down (see
        the module docstring); it may take up to ``stepdown_grace_s``, after which the
        library resigns anyway. Without it, a step-down request resigns at once.
        No I/O: see :meth:`start`."""
        if not 0 <= drift < 0.5:
            raise errors.InvalidArgument("drift must be in [0, 0.5)")
        if not 0 <= stepdown_grace_s < float("inf"):
            raise errors.InvalidArgument("stepdown_grace_s must be a finite number >= 0")
        self.stepdown_grace_s = stepdown_grace_s
        self._stepdown_hooks: list[StepDownHook] = []
        self.client = client
        self.name = name
        self.drift = drift
        self.ttl_s = ttl_s  # as asked; once open, as the cluster granted it
        self._callbacks: list[StateCallback] = [on_state] if on_state else []
        self._on_stepdown = on_stepdown
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._events: queue.Queue[SessionState | None] = queue.Queue()
        self._id = ""
        self._open_request_id = new_request_id()
        self._valid_until = 0.0
        self._last_ack = 0.0
        # What the cluster said this session holds: (group, slot) -> (token, revoked),
        # read at revision _held_revision, in answer to a keepalive sent at _held_as_of.
        self._held: dict[tuple[str, int], tuple[int, bool]] = {}
        self._held_revision = 0
        self._held_as_of = 0.0
        self._call: grpc.Call | None = None  # the live keepalive stream
        self._load = 0.0
        self._wake = threading.Event()  # set by report_load() and close()
        self._close_sent = False
        self._stalled_endpoint: str | None = None
        self._state = SessionState.NEW
        self._stop = threading.Event()

    def start(self) -> Session:
        """Open the session on the cluster and start keeping it alive; returns it.

        Raises what the cluster answered (Unavailable when no node could be reached
        within the client's ``timeout_s``); the session stays unopened and ``start()``
        may be called again. Once open, a second call does nothing; a closed or lost
        session cannot be started again (open a new one)."""
        with self._start_lock:
            if self._state is not SessionState.NEW:
                if self._state in (SessionState.LOST, SessionState.CLOSED):
                    raise errors.FailedPrecondition(
                        f"session {self._id or self.name!r} is {self._state.value}: "
                        "open a new session"
                    )
                return self
            self._open()
            for target in (self._run_callbacks, self._keep_alive, self._watch_validity):
                threading.Thread(target=target, daemon=True).start()
        return self

    def _open(self) -> None:
        # One request id for every attempt, across start() calls too: a start() after
        # one whose answer was lost (applied, then the leader died) gets the session
        # the first attempt opened, not a second one that nobody would ever close.
        req = election_pb2.OpenSessionRequest(
            ttl_ms=int(self.ttl_s * 1000), name=self.name, request_id=self._open_request_id
        )
        sent = clock.now()
        resp = self.client.call(
            lambda ch, t: election_pb2_grpc.SessionsStub(ch).Open(req, timeout=t)
        )
        with self._lock:
            self._id = resp.session.id
            self.ttl_s = resp.session.ttl_ms / 1000
            self._valid_until = sent + self.ttl_s * (1 - self.drift)
            self._last_ack = sent
            self._state = SessionState.CONNECTED  # the first state: no callback

    @property
    def id(self) -> str:
        """The session's id, given by the cluster when it was opened."""
        self._started()
        return self._id

    def _started(self) -> None:
        """Sessions used to open in their constructor: a session used before ``start()``
        still opens, with a DeprecationWarning, for one release."""
        if self._state is SessionState.NEW:
            warnings.warn(
                "a Session no longer opens in its constructor: call start() or use it as "
                "a context manager (it is opened now, implicitly)",
                DeprecationWarning,
                stacklevel=3,
            )
            self.start()

    # -- public ----------------------------------------------------------------

    @property
    def state(self) -> SessionState:
        return self._state

    def report_load(self, load: float) -> None:
        """Report this session's load (for least-load balancing); sent with the next
        keepalive, which goes out early (at most every 0.1 s) when the load changed."""
        if not 0 <= load < float("inf"):
            raise errors.InvalidArgument(f"load must be a finite number >= 0, got {load}")
        if load != self._load:
            self._load = load
            self._wake.set()

    def is_valid(self) -> bool:
        """True while this process may act on the session (it has not expired here).
        A session not started yet is not valid (and this never opens it)."""
        with self._lock:
            live = self._state in (SessionState.CONNECTED, SessionState.SUSPENDED)
            return live and clock.now() < self._valid_until

    def valid_for_s(self) -> float:
        with self._lock:
            return max(0.0, self._valid_until - clock.now())

    def holds(self, group: str, slot: int, token: int, granted_at: float) -> bool:
        """False once the cluster's newest word shows the slot granted at ``token``
        (seen here at ``granted_at``) revoked, held under a higher token, or gone.

        A view showing this token revoked or a higher one ends mastership whenever it
        arrived. A view without the slot does if it is as new as the grant: read at a
        revision >= ``token`` (the grant's revision), or sent after ``granted_at``.
        """
        with self._lock:
            held = self._held.get((group, slot))
            revision, as_of = self._held_revision, self._held_as_of
        if held == (token, False):
            return True
        if held is not None and (held[0] > token or held == (token, True)):
            return False
        return revision < token and as_of <= granted_at  # an older view: no word yet

    def add_callback(self, fn: StateCallback) -> None:
        self._callbacks.append(fn)

    def close(self) -> None:
        """Close the session on the cluster (releasing what it holds) and stop.

        If its validity already ended here, LOST is reported first (callbacks learn
        that it was lost, not merely closed); the cluster is told either way. A session
        never started just ends (CLOSED)."""
        with self._start_lock, self._lock:  # not while start() opens it
            opened = self._state is not SessionState.NEW
            first_close = opened and not self._close_sent
            self._close_sent = True
            ended = opened and clock.now() >= self._valid_until
        if ended:
            self._lost("its validity ended before it was closed")
        self._set_state(SessionState.CLOSED)
        self._stop.set()
        self._wake.set()
        if first_close:
            close = election_pb2.CloseSessionRequest(
                session_id=self._id, own=True, request_id=new_request_id()
            )
            with contextlib.suppress(errors.NotFound, errors.Unavailable):  # gone already
                self.client.call(
                    lambda ch, t: election_pb2_grpc.SessionsStub(ch).Close(close, timeout=t)
                )
        self._events.put(None)

    def __enter__(self) -> Session:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- state -----------------------------------------------------------------

    def _set_state(self, new: SessionState) -> bool:
        """Move to ``new`` unless final; returns True if the session was live before."""
        with self._lock:
            old = self._state
            if old in (SessionState.LOST, SessionState.CLOSED) or old == new:
                return False
            self._state = new
        self._events.put(new)
        return True

    def _run_callbacks(self) -> None:
        while True:
            state = self._events.get()
            if state is None:
                return
            for fn in list(self._callbacks):
                try:
                    fn(self, state)
                except Exception:
                    logger.exception("session state callback failed")
            if state in (SessionState.LOST, SessionState.CLOSED):
                return

    def _acked(self, sent: float, resp: election_pb2.KeepAliveResponse) -> None:
        with self._lock:
            self._valid_until = max(self._valid_until, sent + self.ttl_s * (1 - self.drift))
            self._last_ack = max(self._last_ack, sent)
            # The view read at the highest revision wins (a slow answer from before a
            # revoke must not make the slot look held again).
            if (resp.header.revision, sent) >= (self._held_revision, self._held_as_of):
                self._held = {(h.group, h.slot): (h.token, h.revoked) for h in resp.held}
                self._held_revision, self._held_as_of = resp.header.revision, sent
        self._set_state(SessionState.CONNECTED)

    def _lost(self, why: str) -> None:
        if self._set_state(SessionState.LOST):
            logger.warning("session %s lost: %s", self._id, why)
        self._stop.set()
        self._wake.set()

    # -- threads ---------------------------------------------------------------

    def _watch_validity(self) -> None:
        step = max(0.005, self.ttl_s / 50)
        while not self._stop.wait(step):
            now = clock.now()
            with self._lock:
                valid_until, last_ack = self._valid_until, self._last_ack
            if now >= valid_until:
                self._lost("no keepalive acknowledged within the TTL")
                return
            if now - last_ack > self.ttl_s / 2:
                self._set_state(SessionState.SUSPENDED)
                call = self._call
                if call is not None:
                    # A hung leader (SIGSTOP) keeps its socket open: give up on it
                    # and look for the new leader while the session is still valid.
                    self._call = None
                    call.cancel()

    def _keep_alive(self) -> None:
        interval = self.ttl_s / 3
        endpoint: str | None = None
        while not self._stop.is_set():
            endpoint = endpoint or self._leader_endpoint()
            if endpoint is None:
                self._stop.wait(min(0.05, interval))
                continue
            try:
                self._stream(endpoint, interval)
                endpoint = None  # the stream ended or was given up: find the leader again
            except errors.CoordError as e:
                hint = e.leader_address
                endpoint = hint if hint and hint != self._stalled_endpoint else None
                if not self._stop.is_set():
                    self._set_state(SessionState.SUSPENDED)
                    self._stop.wait(0.02)

    def _leader_endpoint(self) -> str | None:
        """The leader, asked briefly of every endpoint; skip a leader that just stalled
        on us (nobody else knows better: try it again next time)."""
        address = self.client.find_leader(skip=self._stalled_endpoint, ask_timeout_s=0.2)
        if address is None:
            self._stalled_endpoint = None
        return address

    def _stream(self, endpoint: str, interval: float) -> None:
        sent_at: dict[int, float] = {}

        def requests() -> Iterator[election_pb2.KeepAliveRequest]:
            seq = 0
            while not self._stop.is_set():
                seq += 1
                sent_at[seq] = clock.now()
                yield election_pb2.KeepAliveRequest(session_id=self._id, seq=seq, load=self._load)
                # A new load report goes out early, at most every LOAD_REPORT_GAP_S.
                self._stop.wait(min(interval, LOAD_REPORT_GAP_S))
                if self._wake.wait(max(0.0, interval - LOAD_REPORT_GAP_S)):
                    self._wake.clear()

        stub = election_pb2_grpc.SessionsStub(self.client.channel(endpoint))
        call = stub.KeepAlive(requests())
        self._call = call
        self._stalled_endpoint = None
        try:
            for resp in call:
                if resp.expired:
                    self._lost("the cluster expired the session")
                    return
                sent = sent_at.pop(resp.seq, None)
                if sent is not None:
                    self._acked(sent, resp)
                for step in resp.stepdown:
                    # Each holding (Leadership) handles its own request, once, on a thread
                    # (the request repeats on every keepalive until it is answered).
                    for hook in list(self._stepdown_hooks):
                        hook(step, resp.header.revision)
        except grpc.RpcError as e:
            if self._stop.is_set():
                return
            if self._call is None:  # cancelled by the watchdog: that leader hangs
                self._stalled_endpoint = endpoint
                return
            raise translate(e, endpoint) from None
        finally:
            self._call = None
            call.cancel()
