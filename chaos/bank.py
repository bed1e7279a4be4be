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
audits; per-key linearizability of single-key operations is the register workload's.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from chaos.records import RunRecord
from chaos.worker import Worker
from coord import errors
from coord.client import Client
from coord.client import txn as t

if TYPE_CHECKING:
    from chaos.checkers import Violation

ACCOUNTS = [f"bank/a{i}" for i in range(5)]
OPENING = 100
TOTAL = OPENING * len(ACCOUNTS)


def open_accounts(client: Client) -> None:
    """Put every account at its opening balance, once: the Txn does nothing if any
    account exists (a retry after an unknown outcome, or another opener)."""
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
        ra, rb = client.get(a), client.get(b)
        if ra is None or rb is None:
            open_accounts(client)
            return
        amount = self.rng.randint(1, 20)
        have = int(ra.value)
        if have < amount:
            return
        resp = client.txn(
            compares=[t.mod_revision(a) == ra.mod_revision, t.mod_revision(b) == rb.mod_revision],
            success=[t.put(a, str(have - amount)), t.put(b, str(int(rb.value) + amount))],
        )
        if resp.succeeded:
            with _LOCK:
                self.record.bank_transfers += 1


class Auditor(Worker):
    """Reads every account at one revision, over and over; records (time, accounts
    seen, their total) for :func:`bank_conserved`."""

    def __init__(self, record: RunRecord, endpoints: Sequence[str], name: str) -> None:
        super().__init__(name)
        self.record, self.endpoints = record, list(endpoints)

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
        resp = client.range("bank/", prefix=True)
        seen = {kv.key.decode(): kv.value for kv in resp.kvs}
        total = sum(int(v) for v in seen.values())
        with _LOCK:
            self.record.bank_audits.append(
                (time.monotonic(), len(seen), total, resp.header.revision)
            )


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
