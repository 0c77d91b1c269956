"""The DICOM C-STORE SCP source (pynetdicom): a scanner or PACS pushes slices; each is answered
Success once durably spooled. AE titles, association count, idle time, PDU and data set sizes
are enforced as the bytes arrive."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import queue
import select
import socket
import struct
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hxsched._compat import require
from hxsched.errors import ResourceError
from hxsched.runtime.service.intake import (
    STATUS_OUT_OF_RESOURCES,
    STATUS_SUCCESS,
    Gate,
    Intake,
    intake_of,
)
from hxsched.runtime.service.journal import TMP_PREFIX, Journal, SpoolError
from hxsched.runtime.service.pipeline import CT_IMAGE_STORAGE, Pipeline, Source, SourceKind

log = logging.getLogger("hxsched.service")

VERIFICATION = "1.2.840.10008.1.1"  # Verification SOP Class (C-ECHO), PS3.4 Annex A
STATUS_SOP_CLASS_NOT_SUPPORTED = 0x0122  # "Refused: SOP Class not supported" (PS3.7 C.4.2)
STATUS_CANNOT_UNDERSTAND = 0xC000  # "Error: Cannot understand" (PS3.4 B.2.3)
P_DATA_TF = 0x04  # PDU types, PS3.8 Section 9.3.1
OTHER_PDU_MAX = 1 << 20  # an A-ASSOCIATE-RQ, A-RELEASE, A-ABORT: far below this
# connections beyond max_associations that still get an A-ASSOCIATE-RJ; more are closed at once
REJECT_HEADROOM = 8
# the longest an association's two reactor threads wait for their next event before they look
# at their timers (idle, ARTIM) and kill flags again: they are woken by the event itself, not by
# polling every millisecond as pynetdicom does (see _wait_not_poll)
WAIT_S = 0.05


@dataclass(frozen=True)
class ScpSettings:
    """What the SCP enforces (the pipeline's scp source, its ``max_bytes`` and ``accept``)."""

    calling_ae_titles: tuple[str, ...] | None = None  # None: any sender (warned at start)
    max_associations: int = 8
    idle_timeout_s: float = 30.0  # ACSE, DIMSE and network (idle) timeouts
    # the Maximum Length we advertise (PS3.8 Annex D.1); longer P-DATA PDUs abort. 131072 is the
    # largest DCMTK and Orthanc accept ("MaximumPduLength", range 4096..131072): against 16382
    # it cuts pynetdicom's per-PDU work (a 512 x 512 CT slice is 4 PDUs, not 32)
    max_pdu: int = 131072
    max_bytes: int = 64 << 20  # a C-STORE data set longer than this aborts while it arrives
    sop_classes: tuple[str, ...] = (CT_IMAGE_STORAGE,)

    @classmethod
    def of(cls, src: Source, pipe: Pipeline) -> ScpSettings:
        """The settings of one scp source (its defaults are filled by Source)."""
        assert src.max_associations is not None and src.idle_timeout_s is not None
        assert src.max_pdu is not None
        return cls(
            calling_ae_titles=src.calling_ae_titles,
            max_associations=src.max_associations,
            idle_timeout_s=src.idle_timeout_s,
            max_pdu=src.max_pdu,
            max_bytes=pipe.max_bytes,
            sop_classes=pipe.accept.sop_classes,
        )


class ScpSource:
    """A DICOM C-STORE SCP (pynetdicom): a scanner or PACS pushes slices; each is answered
    Success once spooled, or 0xA700 (out of resources) only when it cannot be spooled."""

    def __init__(
        self,
        journal: Journal,
        gate: Gate,
        *,
        host: str,
        port: int,
        ae_title: str,
        on_accept: Callable[[Intake], None],
        wait_s: float = 30.0,
        settings: ScpSettings | None = None,
    ) -> None:
        self.journal, self.gate, self.on_accept = journal, gate, on_accept
        self.host, self.port, self.ae_title, self.wait_s = host, port, ae_title, wait_s
        self.settings = settings or ScpSettings()
        self._ae: Any = None  # pynetdicom's AE once started
        self._server: Any = None  # its ThreadedAssociationServer

    def handle_store(self, event) -> int:
        req = event.request
        if str(req.AffectedSOPClassUID) not in self.settings.sop_classes:
            return STATUS_SOP_CLASS_NOT_SUPPORTED  # sent under another class's context
        if not self.gate.acquire(self.wait_s):  # a reservation: the queue bound holds
            log.warning("scp: journal full for %.0f s; answering out of resources", self.wait_s)
            return STATUS_OUT_OF_RESOURCES
        try:
            key = str(req.AffectedSOPInstanceUID or "") or None
            # pynetdicom's temporary file (in spool/) is renamed into place, not copied; pynetdicom
            # then finds it gone when it removes it, which it tolerates (service_class.py)
            pushed = _pushed(event)
            item = self.journal.accept(pushed, "scp.dcm", SourceKind.SCP, key=key, move=True)
        except (SpoolError, ResourceError) as exc:
            log.error("scp: cannot spool: %s", exc)
            self.gate.trouble(exc)  # a full disk holds the service until it clears
            return STATUS_OUT_OF_RESOURCES
        except Exception as exc:  # noqa: BLE001 - a malformed push must not stop the SCP
            log.warning(
                "scp: cannot encode a pushed dataset (%s); spooling refused", type(exc).__name__
            )
            return STATUS_CANNOT_UNDERSTAND
        finally:
            self.gate.release()
        self.on_accept(intake_of(item))
        return STATUS_SUCCESS

    def handle_rejected(self, event) -> None:
        """Log why an association was rejected (PS3.8 A-ASSOCIATE-RJ), no more of the peer's
        words than 16 printable characters of its calling AE title."""
        rq = event.assoc.requestor
        called = str(getattr(rq.primitive, "called_ae_title", "") or "").strip()
        calling = str(rq.ae_title or "").strip()
        allowed = self.settings.calling_ae_titles
        if called != self.ae_title.strip():
            why = "called AE title is not ours"
        elif allowed is not None and calling not in {a.strip() for a in allowed}:
            why = "calling AE title not allowed"
        else:
            why = f"already {self.settings.max_associations} associations"
        log.warning("scp: association rejected: %s (calling AE %r)", why, _printable(calling))

    def start(self) -> None:
        require("pynetdicom", extra="service")
        from pynetdicom import AE, _config, evt

        from hxsched.errors import HxschedError

        s = self.settings
        # C-STORE data sets go to a temporary file as they arrive, not into memory
        # (pynetdicom's documented _config.STORE_RECV_CHUNKED_DATASET)
        _config.STORE_RECV_CHUNKED_DATASET = True
        _spool_partials_in(self.journal.spool_dir)
        self._ae = ae = AE(ae_title=self.ae_title)
        ae.maximum_associations = s.max_associations
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = s.idle_timeout_s
        ae.maximum_pdu_size = s.max_pdu
        ae.require_called_aet = True
        if s.calling_ae_titles is not None:
            ae.require_calling_aet = list(s.calling_ae_titles)
        else:
            log.warning("scp: no calling_ae_titles in the pipeline: any sender is accepted")
        syntaxes = transfer_syntaxes()
        for uid in s.sop_classes:
            ae.add_supported_context(uid, syntaxes)
        ae.add_supported_context(VERIFICATION)
        handlers: list[Any] = [
            (evt.EVT_C_STORE, self.handle_store),
            (evt.EVT_REJECTED, self.handle_rejected),
            (evt.EVT_CONN_CLOSE, _drop_partial),
        ]
        try:
            self._server = ae.make_server(
                (self.host, self.port),
                evt_handlers=handlers,
                server_class=_server_class(),
                request_handler=_request_handler(s.max_pdu, s.max_bytes, s.idle_timeout_s),
            )
        except (OSError, OverflowError) as exc:
            raise HxschedError(
                f"cannot listen for DICOM on {self.host}:{self.port}: "
                f"{getattr(exc, 'strerror', None) or exc}"
            ) from None
        ae._servers.append(self._server)  # as AE.start_server does (server.shutdown expects it)
        threading.Thread(target=self._server.serve_forever, name="hxsched-scp", daemon=True).start()
        self.port = int(self._server.server_address[1])

    def stop(self) -> None:
        """Stop listening, abort the associations still open and drop the connections not yet
        associated (an A-ABORT there is an invalid event for pynetdicom's state machine)."""
        if self._ae is None or self._server is None:  # never started, or could not listen
            self._ae = None
            return
        self._server.shutdown()
        for assoc in self._ae.active_associations:
            if assoc.is_established:
                assoc.abort()
            else:
                raw: Any = getattr(assoc.dul.socket, "socket", None)
                with contextlib.suppress(OSError, AttributeError):
                    raw.shutdown(socket.SHUT_RDWR)  # the reactor reads the close: Evt17
        self._ae = self._server = None


def _spool_partials_in(folder: Path) -> None:
    """Make pynetdicom write arriving data sets into the spool folder as ``.tmp-`` files (the
    journal's recovery removes those after a kill -9), not into the system's temp folder. It
    names them with ``tempfile.NamedTemporaryFile(delete=False, suffix=".dcm")``
    (pynetdicom/dimse_messages.py), looked up in that module at each call."""
    import tempfile

    from pynetdicom import dimse_messages

    dimse_messages.NamedTemporaryFile = functools.partial(  # type: ignore[assignment]
        tempfile.NamedTemporaryFile, dir=str(folder), prefix=TMP_PREFIX + "scp-"
    )


def _pushed(event) -> bytes | Path:
    """The pushed data set as a DICOM file (preamble, file meta, data set as received): the
    temporary file pynetdicom wrote it to, or its bytes."""
    try:
        return Path(event.dataset_path)  # _config.STORE_RECV_CHUNKED_DATASET
    except AttributeError:
        return bytes(event.encoded_dataset())


def _printable(text: str) -> str:
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text[:16])


@functools.lru_cache(maxsize=1)
def transfer_syntaxes() -> tuple[str, ...]:
    """The transfer syntaxes offered for storage: the uncompressed ones pynetdicom proposes by
    default, and the compressed ones pydicom can decode in this installation (a sender then
    falls back to one of these rather than push what would be quarantined)."""
    from pynetdicom._globals import ALL_TRANSFER_SYNTAXES, DEFAULT_TRANSFER_SYNTAXES

    def decodable(uid: str) -> bool:
        try:
            from pydicom.pixels import get_decoder  # pydicom >= 3
        except ImportError:
            return False
        try:
            return bool(get_decoder(uid).is_available)
        except (NotImplementedError, ValueError):
            return False

    return tuple(t for t in ALL_TRANSFER_SYNTAXES if t in DEFAULT_TRANSFER_SYNTAXES or decodable(t))


class PduGuard:
    """What one connection's peer may send, checked on the bytes as they arrive: PDUs no longer
    than advertised (the Maximum Length of a P-DATA-TF PDU's variable field, PS3.8 Annex D.1)
    and C-STORE data sets no longer than ``max_bytes`` (counting PDV fragments, PS3.8 Annex E)."""

    def __init__(self, max_pdu: int, max_bytes: int) -> None:
        self.max_pdu, self.max_bytes = max_pdu, max_bytes
        self.data_set = 0  # bytes of the data set now arriving
        self.body_of: int | None = None  # the PDU type whose body is read next
        self.refused = False

    def header(self, head: bytes | bytearray) -> str | None:
        """A PDU's 6-byte header: why it is refused, or None."""
        if len(head) != 6 or not 1 <= head[0] <= 7:
            return None  # pynetdicom itself ends the association
        pdu_type, _, length = struct.unpack(">BBL", head)
        limit = self.max_pdu if pdu_type == P_DATA_TF else max(self.max_pdu, OTHER_PDU_MAX)
        if length > limit:
            return f"a PDU of {length} bytes (type 0x{pdu_type:02X}) is over the {limit} allowed"
        self.body_of = pdu_type
        return None

    def body(self, data: bytes | bytearray) -> str | None:
        """The body of the PDU whose header came last: why it is refused, or None."""
        pdu_type, self.body_of = self.body_of, None
        if pdu_type != P_DATA_TF:
            return None
        off = 0
        while off + 6 <= len(data):  # PDV items: length (4), context ID, control header
            (length,) = struct.unpack_from(">L", data, off)
            control = data[off + 5]
            if not control & 1:  # a data set fragment
                self.data_set += max(0, length - 2)
                if self.data_set > self.max_bytes:
                    return f"a C-STORE data set is over max_bytes ({self.max_bytes})"
                if control & 2:  # its last fragment
                    self.data_set = 0
            off += 4 + length
        return None


def _recv_exactly(raw: socket.socket, nr_bytes: int) -> bytearray:
    """``nr_bytes`` from ``raw`` (fewer once the peer closes): pynetdicom reads 4096 bytes per
    call; one ``recv_into`` per arriving segment costs less per PDU."""
    buf = bytearray(nr_bytes)
    view, got = memoryview(buf), 0
    while got < nr_bytes:
        n = raw.recv_into(view[got:], nr_bytes - got)
        if not n:
            view.release()
            return buf[:got]
        got += n
    view.release()
    return buf


def _unbind_log_handlers(assoc: Any) -> None:
    """Unbind pynetdicom's standard notification handlers (pynetdicom/_handlers.py), which
    format every PDU and DIMSE message into log text, UIDs included, whatever the log level
    (logsafe withholds most of it), unless pynetdicom's own logger is enabled for DEBUG."""
    if logging.getLogger("pynetdicom").isEnabledFor(logging.DEBUG):
        return
    from pynetdicom import _handlers, evt

    for event, handler in (
        (evt.EVT_DIMSE_RECV, _handlers.standard_dimse_recv_handler),
        (evt.EVT_DIMSE_SENT, _handlers.standard_dimse_sent_handler),
        (evt.EVT_PDU_RECV, _handlers.standard_pdu_recv_handler),
        (evt.EVT_PDU_SENT, _handlers.standard_pdu_sent_handler),
    ):
        assoc.unbind(event, handler)


class _WakingQueue(queue.Queue):
    """A ``queue.Queue`` that calls ``wake`` after each put (``put_nowait`` is ``put``), once
    the item is in and the queue's lock released."""

    def __init__(self, wake: Callable[[], None]) -> None:
        super().__init__()
        self._wake = wake

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._wake()


class _Wakeup:
    """A socket pair that wakes a ``select`` from another thread; closed under a lock, so a late
    wake never writes to a descriptor number that has since been reused."""

    def __init__(self) -> None:
        self.r, self.w = socket.socketpair()
        self.r.setblocking(False)
        self.w.setblocking(False)
        self._lock = threading.Lock()
        self._closed = False

    def wake(self) -> None:
        with self._lock:
            if not self._closed:
                with contextlib.suppress(OSError):  # BlockingIOError: a wake already pending
                    self.w.send(b"\0")

    def drain(self) -> None:
        with contextlib.suppress(OSError):
            self.r.recv(4096)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self.r.close()
                self.w.close()


def _wait_not_poll(assoc: Any, sock: Any, dimse_class: type) -> None:
    """Make an association's two reactor threads wait for their events instead of polling.

    pynetdicom (3.0.4) polls: the DUL reactor (dul.py ``run_reactor``) checks its outgoing queue
    and the socket (``AssociationSocket.ready``: ``select`` with a zero timeout) and sleeps
    ``_run_loop_delay`` (1 ms) when there was nothing; the association reactor
    (association.py ``_run_reactor``) sleeps 1 ms and polls ``dimse.get_msg(block=False)``.
    That is ~2000 wake-ups a second per association, busy or idle, each taking the GIL from the
    service's other threads. Here, with pynetdicom's loops and delays unchanged:

    * in data transfer (Sta6) the DUL's ``ready`` waits up to WAIT_S on the socket and on a
      wake-up that every put to the DUL's ``to_provider_queue`` (what the association sends:
      C-STORE responses, A-RELEASE, A-ABORT) signals (GuardedSocket.ready);
    * the association reactor's ``get_msg(block=False)`` waits up to WAIT_S on an event that
      every put to ``dimse.msg_queue`` (a decoded DIMSE message; ``(None, None)`` on abort) and
      to the DUL's ``to_user_queue`` (A-RELEASE, A-ABORT indications) sets (WaitingDimse).

    Only the queues are replaced (pynetdicom creates them empty with the association, before
    either thread starts; it never rebinds them)."""
    dul, dimse = assoc.dul, assoc.dimse
    wakeup = _Wakeup()
    sock.wakeup = wakeup
    weakref.finalize(sock, wakeup.close)  # when the DUL reactor did not close it (below)
    dul.to_provider_queue = _WakingQueue(wakeup.wake)
    arrived = threading.Event()
    dul.to_user_queue = _WakingQueue(arrived.set)
    dimse.msg_queue = _WakingQueue(arrived.set)
    dimse.__class__ = dimse_class  # the same object, waiting in get_msg
    dimse.arrived = arrived


@functools.cache
def _request_handler(max_pdu: int, max_bytes: int, idle_s: float) -> type:
    """pynetdicom's RequestHandler whose association reads through a PduGuard and whose
    reactors wait for their events rather than poll (_wait_not_poll)."""
    from pynetdicom.dimse import DIMSEServiceProvider
    from pynetdicom.transport import AssociationSocket, RequestHandler

    class GuardedSocket(AssociationSocket):
        guard: PduGuard
        wakeup: _Wakeup

        def recv(self, nr_bytes: int) -> bytearray:
            g, raw = self.guard, self.socket
            if g.refused or raw is None:
                return bytearray()  # pynetdicom reads a closed connection (Evt17)
            data = _recv_exactly(raw, nr_bytes)
            is_header = g.body_of is None
            why = g.header(data) if is_header else g.body(data)
            if why is None:
                return data
            g.refused = True
            log.warning("scp: %s; aborting the association", why)
            # Evt19, "invalid PDU received": the state machine sends an A-ABORT (PS3.8 AA-8);
            # a refused header's body is never read (the short header ends the connection)
            self.event_queue.put("Evt19")
            return bytearray() if is_header else data

        @property
        def ready(self) -> bool:
            """pynetdicom's ``ready`` (data waiting on the connection); in data transfer with
            nothing else to do, it waits up to WAIT_S for data or for something to send."""
            raw, dul = self.socket, self.assoc.dul
            if (
                raw is None
                or not self._is_connected
                or hasattr(raw, "pending")  # TLS: buffered data select cannot see
                or dul.state_machine.current_state != "Sta6"
                or not self.event_queue.empty()
            ):
                return bool(AssociationSocket.ready.fget(self))  # type: ignore[attr-defined]
            try:
                got, _, _ = select.select([raw, self.wakeup.r], [], [], WAIT_S)
            except (OSError, ValueError):
                self.event_queue.put("Evt17")  # as pynetdicom: the connection is closed
                return False
            if self.wakeup.r in got:
                self.wakeup.drain()  # the DUL looks at its queue next, then waits again
            return raw in got

        def close(self) -> None:
            super().close()
            if threading.current_thread() is self.assoc.dul:  # no other thread waits on it
                self.wakeup.close()

    class WaitingDimse(DIMSEServiceProvider):
        arrived: threading.Event

        def get_msg(self, block: bool = False) -> Any:
            if not block and threading.current_thread() is self.assoc:  # its reactor
                self.arrived.clear()  # before looking: a put from now on sets it again
                if self.msg_queue.empty() and self.dul.to_user_queue.empty():
                    self.arrived.wait(WAIT_S)
            return super().get_msg(block)

    class GuardedHandler(RequestHandler):
        def _create_association(self) -> Any:
            with contextlib.suppress(OSError, AttributeError):
                self.request.settimeout(idle_s)
                # request and response: a C-STORE-RSP (a small PDU) goes out at once, not held
                # by Nagle's algorithm until the sender's next segment acknowledges the last one
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            assoc = super()._create_association()
            sock: Any = assoc.dul.socket
            sock.__class__ = GuardedSocket  # the same object, reading through the guard
            sock.guard = PduGuard(max_pdu, max_bytes)
            _wait_not_poll(assoc, sock, WaitingDimse)
            _unbind_log_handlers(assoc)
            return assoc

    return GuardedHandler


@functools.cache
def _server_class() -> type:
    """pynetdicom's ThreadedAssociationServer that closes a connection at once (no thread,
    no A-ASSOCIATE-RJ) while max_associations + REJECT_HEADROOM are open: a flood of
    connections cannot pile up threads."""
    from pynetdicom.transport import ThreadedAssociationServer

    class CappedServer(ThreadedAssociationServer):
        def verify_request(self, request: Any, client_address: Any) -> bool:
            return len(self.ae.active_associations) < self.ae.maximum_associations + REJECT_HEADROOM

    return CappedServer


def _drop_partial(event) -> None:
    """A connection closed mid C-STORE: remove the temporary file its data set was going to
    (pynetdicom removes it only once the message is complete)."""
    message = getattr(event.assoc.dimse, "message", None)
    partial = getattr(message, "_data_set_file", None)
    if partial is not None:
        with contextlib.suppress(OSError):
            partial.close()
            os.unlink(partial.name)
