"""The bank workload: transfers between accounts by multi-key transactions (``KV.Txn``),
and audits that read every account at one revision (Jepsen's classic "bank" test).

Five accounts ``bank/a0``..``bank/a4`` start at 100 each (one transaction that puts
them all if none exists). Tellers move a random amount between two random accounts:
read both records, then one Txn that compares both mod revisions and puts both new
balances. An auditor reads the prefix (a linearizable range: one revision) over and
over. A transaction applies all of its branch or nothing, whatever the faults: so
every audit that sees the accounts sees them sum to 500 — a torn transfer (one put
applied without the other), a transfer applied twice (a retried request id applied
again) or a lost one all change the total. The ``bank_conserved`` checker judges the
audits.

Every operation is also recorded in ``record.bank_history``
(chaos.txn_linearizability.TxnOp: the tellers' reads, the transactions with their
compares, puts, outcome — ok, compare failed or unknown — and revision, the audits'
values and revision, with call and return times), and ``bank_linearizable``
(chaos.checkers) checks that history for linearizability as a whole: a stale audit, a
txn applied in part, a lost acknowledged one or two succeeding on one compare are
caught even when every sum is right.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from chaos.records import RunRecord
from chaos.txn_linearizability import TxnHistory, TxnOp
from chaos.worker import Worker
from coord import errors
from coord.client import Client
from coord.client import txn as t

if TYPE_CHECKING:
    from chaos.checkers import Violation

ACCOUNTS = [f"bank/a{i}" for i in range(5)]
OPENING = 100
TOTAL = OPENING * len(ACCOUNTS)

# Each worker's history process ids: a block of its own (a new id after every unknown
# outcome: the old request may still be in flight, as if from another process).
_PROCESS_BLOCKS = itertools.count(1)


def _new_pid() -> int:
    return next(_PROCESS_BLOCKS) * 1_000_000


class _Recorder:
    """One worker's bank operations, recorded in ``record.bank_history`` around the
    client's calls (chaos.txn_linearizability.TxnHistory)."""

    def __init__(self, record: RunRecord) -> None:
        self.history = TxnHistory(record.bank_history)
        self.pid = _new_pid()

    def read(
        self, client: Client, key: str, prefix: bool = False
    ) -> tuple[dict[str, tuple[str, int]], int]:
        """A linearizable range (one key, or a prefix: the accounts), recorded: key ->
        (value, mod revision) of the keys present, and the revision it was read at."""
        handle = self.history.invoke(TxnOp.read(self.pid, [key], [], 0.0, None))
        try:
            resp = client.range(key, prefix=prefix)
        except errors.CoordError:
            self.history.complete(handle, "unknown")  # a read that failed: no constraint
            raise
        got = {kv.key.decode(): (kv.value.decode(), kv.mod_revision) for kv in resp.kvs}
        self.history.complete(
            handle,
            "ok",
            resp.header.revision,
            [(k, v, m) for k, (v, m) in got.items()],
            # A prefix covers every account (absent unless seen), and whatever else it saw.
            keys=sorted({*ACCOUNTS, *got}) if prefix else [key],
        )
        return got, resp.header.revision

    def txn(
        self, client: Client, compares: list[tuple[str, int]], puts: list[tuple[str, str]]
    ) -> bool:
        """One Txn: every compare a mod revision (0: the key is absent), the success
        branch ``puts``. Returns whether it succeeded; raises CoordError (recorded as an
        unknown outcome) if its outcome is unknown."""
        handle = self.history.invoke(TxnOp.txn(self.pid, compares, puts, 0.0, None))
        try:
            resp = client.txn(
                compares=[t.absent(k) if m == 0 else t.mod_revision(k) == m for k, m in compares],
                success=[t.put(k, v) for k, v in puts],
            )
        except errors.CoordError:
            self.history.complete(handle, "unknown")  # may or may not have applied
            self.pid += 1
            raise
        self.history.complete(
            handle, "ok" if resp.succeeded else "compare_failed", resp.header.revision
        )
        return bool(resp.succeeded)


def open_accounts(client: Client, recorder: _Recorder | None = None) -> None:
    """Put every account at its opening balance, once: the Txn does nothing if any
    account exists (a retry after an unknown outcome, or another opener)."""
    compares = [(k, 0) for k in ACCOUNTS]
    puts = [(k, str(OPENING)) for k in ACCOUNTS]
    if recorder is not None:
        recorder.txn(client, compares, puts)
        return
    client.txn(
        compares=[t.absent(k) for k in ACCOUNTS],
        success=[t.put(k, str(OPENING)) for k in ACCOUNTS],
    )


class Teller(Worker):
    """Transfers between two accounts: read both, then compare both mod revisions and
    put both balances in one Txn. Refused compares (a concurrent transfer) are fine."""

    def __init__(self, record: RunRecord, endpoints: Sequence[str], name: str, seed: int) -> None:
        super().__init__(name)
        self.record, self.endpoints = record, list(endpoints)
        self.rng = random.Random(seed)
        self.recorder = _Recorder(record)

    def run(self) -> None:
        client = Client(self.endpoints, timeout_s=1.5, attempt_timeout_s=0.5)
        try:
            while not self.stop.is_set():
                try:
                    self._transfer(client)
                except errors.CoordError:
                    continue  # unknown outcome or unavailable: the audits judge it
                self.ops += 1
        finally:
            client.close()

    def _transfer(self, client: Client) -> None:
        a, b = self.rng.sample(ACCOUNTS, 2)
        ra, rb = self.recorder.read(client, a)[0].get(a), self.recorder.read(client, b)[0].get(b)
        if ra is None or rb is None:
            open_accounts(client, self.recorder)
            return
        amount = self.rng.randint(1, 20)
        have = int(ra[0])
        if have < amount:
            return
        succeeded = self.recorder.txn(
            client,
            compares=[(a, ra[1]), (b, rb[1])],
            puts=[(a, str(have - amount)), (b, str(int(rb[0]) + amount))],
        )
        if succeeded:
            with _LOCK:
                self.record.bank_transfers += 1


class Auditor(Worker):
    """Reads every account at one revision, over and over; records (time, accounts
    seen, their total) for :func:`bank_conserved`."""

    def __init__(self, record: RunRecord, endpoints: Sequence[str], name: str) -> None:
        super().__init__(name)
        self.record, self.endpoints = record, list(endpoints)
        self.recorder = _Recorder(record)

    def run(self) -> None:
        client = Client(self.endpoints, timeout_s=1.5, attempt_timeout_s=0.5)
        try:
            while not self.stop.is_set():
                try:
                    self.audit(client)
                except errors.CoordError:
                    continue
                self.ops += 1
        finally:
            client.close()

    def audit(self, client: Client) -> None:
        got, revision = self.recorder.read(client, "bank/", prefix=True)
        total = sum(int(v) for v, _ in got.values())
        with _LOCK:
            self.record.bank_audits.append((time.monotonic(), len(got), total, revision))


_LOCK = threading.Lock()  # the workers append to the record from their threads


def bank_conserved(record: RunRecord) -> list[Violation]:
    """Every audit that saw any account saw all five, summing to the opening total."""
    from chaos.checkers import Violation  # (chaos.checkers imports this module)

    bad = [a for a in record.bank_audits if a[1] and (a[1] != len(ACCOUNTS) or a[2] != TOTAL)]
    if not bad:
        return []
    first = bad[0]
    return [
        Violation(
            "bank_conserved",
            f"{len(bad)} of {len(record.bank_audits)} audits saw the accounts not sum to "
            f"{TOTAL} (a transaction torn, lost or applied twice); first at revision "
            f"{first[3]}: {first[1]} accounts, total {first[2]}",
        )
    ]
