"""The PACS sink: a thread that C-STOREs each done slice's results (pynetdicom SCU) from the
journal's durable outbound queue, retrying with back-off while the destination is unavailable."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from hxsched._compat import require
from hxsched.errors import HxschedError
from hxsched.runtime.service.journal import (
    OUT_FAILED,
    OUT_QUEUED,
    OUT_SENT,
    Journal,
    OutboxEntry,
    OutboxRow,
    dedupe_key,
)
from hxsched.runtime.service.pipeline import PacsSink

log = logging.getLogger("hxsched.service")

SEND_PREFIXES = ("dicom:", "sr:")  # the output keys sent: Secondary Captures, findings SRs
BATCH = 32  # files taken from the queue per round (one association serves many rounds)
IDLE_S = 1.0  # with nothing due, the queue is looked at again at least this often
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"


def outbox_entries(item_id: str, files: dict[str, str]) -> list[OutboxEntry]:
    """The files of a done slice that the PACS sink sends."""
    return [
        OutboxEntry(item_id, k, p) for k, p in sorted(files.items()) if k.startswith(SEND_PREFIXES)
    ]


class Verdict:
    """What a C-STORE response status means for the file (PS3.4 Annex B.2.3, PS3.7 Annex C)."""

    SENT = "sent"
    RETRY = "retry"
    FAILED = "failed"


def verdict(status: int) -> str:
    """0x0000 and warnings (0x0001, 0xB000-0xBFFF): sent. Out of resources (0xA700-0xA7FF,
    0x0213 resource limitation) and 0x0210/0x0212 (duplicate invocation, mistyped argument seen
    while busy): retried. Everything else (0xA900 data set does not match the SOP class,
    0xC000-0xCFFF cannot understand, 0x0122 SOP class not supported, 0x0124 not authorised,
    ...): permanently failed."""
    if status in (0x0000, 0x0001) or 0xB000 <= status <= 0xBFFF:
        return Verdict.SENT
    if 0xA700 <= status <= 0xA7FF or status in (0x0210, 0x0213):
        return Verdict.RETRY
    return Verdict.FAILED


@dataclass(frozen=True)
class OutboxCounters:
    """The service's metrics the sender counts into (Prometheus counters)."""

    sent: Any
    retries: Any
    failed: Any


@dataclass(frozen=True)
class OutboxStatus:
    """The status page's ``outbox`` block."""

    destination: str
    queued: int
    sent: int
    failed: int
    retries: int
    reachable: bool
    reason: str
    note: str


class _Down(Exception):
    """The destination cannot be reached or dropped the association: ``rows`` (not answered)
    are retried later."""

    def __init__(self, why: str, rows: list[OutboxRow]) -> None:
        super().__init__(why)
        self.rows = rows


class Outbox:
    """Sends queued files to ``sink`` in a thread; the journal is the queue, so a restart
    re-sends whatever was not confirmed (the same files: the same SOP Instance UIDs).

    ``bound``: queued files past which ``over_bound`` names the trouble (the service holds
    its sources then, as for a full disk)."""

    def __init__(
        self,
        journal: Journal,
        sink: PacsSink,
        counters: OutboxCounters,
        *,
        bound: int,
        on_over: Callable[[str], None] | None = None,
    ) -> None:
        require("pynetdicom", extra="service")
        self.journal, self.sink, self.counters = journal, sink, counters
        self.bound, self.on_over = bound, on_over
        self.destination = f"{sink.ae_title}@{sink.host}:{sink.port}"
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._assoc: Any = None
        self._requested: set[str] = set()  # the SOP classes the open association proposed
        self._failures = 0  # consecutive rounds the destination was unavailable
        self._down_until = 0.0
        self.reason = ""  # why the destination is failing now ("": it is not)
        self.sent = self.failed = self.retries = 0

    # -- life cycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="hxsched-outbox", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """New files were queued."""
        self._wake.set()

    def stop(self, timeout_s: float | None = None) -> None:
        """Stop after the file being sent; what is still queued stays for the next start."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s or self.sink.timeout_s * 2 + 5.0)
        self._release()

    # -- status -------------------------------------------------------------------------------
    def queued(self) -> int:
        return self.journal.outbox_queued()

    def over_bound(self) -> str | None:
        """The trouble when more than ``bound`` files wait to be sent; else None."""
        n = self.queued()
        if n <= self.bound:
            return None
        why = f" ({self.reason})" if self.reason else ""
        return f"{n} results wait to be sent to the PACS{why}, over the bound of {self.bound}"

    def status(self) -> OutboxStatus:
        c = self.journal.outbox_counts()
        return OutboxStatus(
            self.destination,
            c[OUT_QUEUED],
            c[OUT_SENT],
            c[OUT_FAILED],
            self.retries,
            not self.reason,
            self.reason,
            "results are queued durably in the journal while the destination is unavailable; "
            "readiness stays true until the queue passes its bound",
        )

    # -- the sender ---------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._round()
            except HxschedError as exc:  # the journal's resource trouble: the service holds
                log.warning("outbox paused", extra={"fields": {"error": str(exc)}})
                self._stop.wait(IDLE_S)
            except Exception as exc:  # noqa: BLE001 - the sender outlives any one surprise
                log.error("outbox round failed", extra={"fields": {"error": type(exc).__name__}})
                self._release()
                self._stop.wait(IDLE_S)
        self._release()

    def _round(self) -> None:
        now = time.time()
        rows = self.journal.outbox_due(now, BATCH) if now >= self._down_until else []
        if not rows:
            self._release()  # no work: the association goes
            self._check_bound()
            nxt = self.journal.outbox_next_due()
            wait = IDLE_S if nxt is None else max(nxt, self._down_until) - now
            self._wake.wait(min(IDLE_S, max(0.01, wait)))
            self._wake.clear()
            return
        try:
            self._send(rows)
        except _Down as exc:
            self._unavailable(exc.rows, str(exc))
        self._check_bound()

    def _check_bound(self) -> None:
        why = self.over_bound() if self.on_over is not None else None
        if why is not None and self.on_over is not None:
            self.on_over(why)

    def _send(self, rows: list[OutboxRow]) -> None:
        """Send each row's file; rows not yet answered when the destination goes raise _Down
        (after those answered were recorded)."""
        loaded = [(r, ds) for r, ds in ((r, self._load(r)) for r in rows) if ds is not None]
        if not loaded:
            return
        try:
            assoc = self._association({str(ds.SOPClassUID) for _, ds in loaded})
        except _Down as exc:
            raise _Down(str(exc), [r for r, _ in loaded]) from None
        for k, (row, ds) in enumerate(loaded):
            if self._stop.is_set():
                return
            if not _accepts(assoc, str(ds.SOPClassUID)):
                self._failed(row, "the destination does not accept this SOP class")
                continue
            try:
                status = assoc.send_c_store(ds)
            except (RuntimeError, ValueError, OSError, AttributeError) as exc:
                if assoc.is_established:  # the file's trouble (cannot be encoded), not the link's
                    self._failed(row, f"the file cannot be sent ({type(exc).__name__})")
                    continue
                self._assoc = None
                why = f"association lost while sending ({type(exc).__name__})"
                raise _Down(why, [r for r, _ in loaded[k:]]) from None
            if not status or "Status" not in status:  # no response: timed out or aborted
                self._assoc = None
                raise _Down("no response to a C-STORE", [r for r, _ in loaded[k:]])
            self._answered(row, int(status.Status), ds)
        self._healthy()

    def _answered(self, row: OutboxRow, code: int, ds: Any) -> None:
        text = f"0x{code:04X}"
        v = verdict(code)
        if v == Verdict.SENT:
            self.journal.outbox_sent(row.id, text, dedupe_key(str(ds.SOPInstanceUID)))
            self.sent += 1
            self.counters.sent.inc()
        elif v == Verdict.RETRY:
            delay = self._delay(row.attempts + 1)
            self.journal.outbox_retry([row.id], time.time() + delay, text)
            self.retries += 1
            self.counters.retries.inc()
            log.warning(
                "PACS destination busy: result queued again",
                extra={"fields": {"item": row.item_id, "status": text, "retry_in_s": delay}},
            )
        else:
            self._failed(row, f"the destination refused it (status {text})")

    def _failed(self, row: OutboxRow, why: str) -> None:
        self.journal.outbox_failed(row.id, why)
        self.failed += 1
        self.counters.failed.inc()
        log.error(
            "result not sent: permanently refused",
            extra={"fields": {"item": row.item_id, "output": row.key, "reason": why}},
        )

    def _load(self, row: OutboxRow) -> Any:
        """The row's dataset, or None (permanently failed: the file is gone or unreadable)."""
        from pydicom import dcmread
        from pydicom.errors import InvalidDicomError

        try:
            return dcmread(row.path)
        except (OSError, InvalidDicomError) as exc:
            kind = "missing" if isinstance(exc, FileNotFoundError) else "unreadable"
            self._failed(row, f"the output file is {kind}")
            return None

    # -- the destination ----------------------------------------------------------------------
    def _association(self, sop_classes: set[str]) -> Any:
        """The open association if it offers these SOP classes, else a new one."""
        assoc = self._assoc
        if assoc is not None and assoc.is_established and sop_classes <= self._requested:
            return assoc
        self._release()
        from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
        from pynetdicom import AE

        ae = AE(ae_title=self.sink.calling_ae_title)
        t = self.sink.timeout_s
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = t
        self._requested = sop_classes | {SECONDARY_CAPTURE, BASIC_TEXT_SR}
        for uid in sorted(self._requested):
            ae.add_requested_context(uid, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        assoc = ae.associate(self.sink.host, self.sink.port, ae_title=self.sink.ae_title)
        if not assoc.is_established:
            if assoc.is_rejected:
                raise _Down("the destination rejected the association (check the AE titles)", [])
            raise _Down("cannot connect to the destination (refused, unreachable or timed out)", [])
        self._assoc = assoc
        return assoc

    def _release(self) -> None:
        assoc, self._assoc = self._assoc, None
        if assoc is not None and assoc.is_established:
            try:
                assoc.release()
            except Exception:  # noqa: BLE001 - closing a connection that is already gone
                assoc.abort()

    def _delay(self, failures: int) -> float:
        """retry_initial_s doubling per failure, at most retry_max_s."""
        s = self.sink
        return min(s.retry_max_s, s.retry_initial_s * 2.0 ** max(0, min(failures - 1, 40)))

    def _unavailable(self, rows: Iterable[OutboxRow], why: str) -> None:
        """The destination is down: these rows wait, and so does the sender, with back-off."""
        self._release()
        self._failures += 1
        delay = self._delay(self._failures)
        self._down_until = time.time() + delay
        ids = [r.id for r in rows]
        self.journal.outbox_retry(ids, self._down_until, why)
        self.retries += len(ids)
        self.counters.retries.inc(len(ids))
        if not self.reason or self._failures in (2, 5) or self._failures % 20 == 0:
            log.warning(
                "PACS destination unavailable: results stay queued",
                extra={
                    "fields": {"reason": why, "retry_in_s": round(delay, 2), "queued": len(ids)}
                },
            )
        self.reason = why

    def _healthy(self) -> None:
        if self.reason:
            log.warning("PACS destination reachable again: sending the queued results")
        self.reason, self._failures = "", 0


def _accepts(assoc: Any, sop_class: str) -> bool:
    return any(cx.abstract_syntax == sop_class for cx in assoc.accepted_contexts)
