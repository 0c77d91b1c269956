"""The DICOM C-STORE SCP source: a scanner or PACS pushes slices; each is answered Success once
durably spooled. AE titles, association count, idle time, PDU and data set sizes are enforced
as the bytes arrive. The upper layer is the project's own (dul.py), one thread per connection:
a data set goes from the socket to its spool file fragment by fragment, with no DIMSE decode
and no per-PDU event machinery (pynetdicom's receive path cost ~8 ms of CPU per 512 x 512
slice, benchmarks/bench_scp_floor.py)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import select
import socket
import struct
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hxsched import __version__
from hxsched.errors import HxschedError, ResourceError
from hxsched.runtime.service import dul
from hxsched.runtime.service.dul import Abort, Command, DulError, Reject
from hxsched.runtime.service.intake import (
    STATUS_OUT_OF_RESOURCES,
    STATUS_SUCCESS,
    Gate,
    Intake,
    intake_of,
)
from hxsched.runtime.service.journal import TMP_PREFIX, Journal, Spooled, SpoolError
from hxsched.runtime.service.pipeline import CT_IMAGE_STORAGE, Pipeline, Source, SourceKind

log = logging.getLogger("hxsched.service")

VERIFICATION = dul.VERIFICATION
STATUS_SOP_CLASS_NOT_SUPPORTED = 0x0122  # "Refused: SOP Class not supported" (PS3.7 C.4.2)
STATUS_CANNOT_UNDERSTAND = 0xC000  # "Error: Cannot understand" (PS3.4 B.2.3)
P_DATA_TF = dul.P_DATA_TF
OTHER_PDU_MAX = 1 << 20  # an A-ASSOCIATE-RQ, A-RELEASE, A-ABORT: far below this
COMMAND_MAX = 1 << 16  # a command set is a few hundred bytes; longer ones abort
# connections beyond max_associations that still get an A-ASSOCIATE-RJ; more are closed at once
REJECT_HEADROOM = 8
# the implementation we announce (A-ASSOCIATE-AC, file meta; the UID: implementation_uid)
IMPLEMENTATION_VERSION = f"HXSCHED_{__version__}"[:16]
UNCOMPRESSED = (
    "1.2.840.10008.1.2",  # implicit VR little endian (the default every SCU must offer)
    "1.2.840.10008.1.2.1",  # explicit VR little endian
    "1.2.840.10008.1.2.1.99",  # deflated explicit VR little endian
    "1.2.840.10008.1.2.2",  # explicit VR big endian (retired, still sent by old modalities)
)


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
    """A DICOM C-STORE SCP: a scanner or PACS pushes slices; each is answered Success once
    spooled, or 0xA700 (out of resources) only when it cannot be spooled."""

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
        syntaxes = transfer_syntaxes()
        self.supported = {uid: syntaxes for uid in self.settings.sop_classes}
        self.supported[VERIFICATION] = UNCOMPRESSED
        self._listener: socket.socket | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._live: set[_Association] = set()
        self._stopping = False

    # -- what a received C-STORE becomes -------------------------------------------------------
    def store(
        self,
        sop_class: str,
        sop_instance: str,
        received: Path | None,
        hashed: Spooled | None = None,
    ) -> int:
        """The status for a C-STORE whose data set is complete in ``received`` (a ``.tmp-``
        file in spool/, given up to the journal; ``hashed`` once fsynced), or None when it was
        not written."""
        if sop_class not in self.settings.sop_classes:
            _unlink(received)
            return STATUS_SOP_CLASS_NOT_SUPPORTED  # sent under another class's context
        if received is None:
            return STATUS_OUT_OF_RESOURCES  # it could not be written (the gate holds)
        if not self.gate.acquire(self.wait_s):  # a reservation: the queue bound holds
            log.warning("scp: journal full for %.0f s; answering out of resources", self.wait_s)
            _unlink(received)
            return STATUS_OUT_OF_RESOURCES
        try:
            key = sop_instance or None
            item = self.journal.accept(
                received, "scp.dcm", SourceKind.SCP, key=key, move=True, hashed=hashed
            )
        except (SpoolError, ResourceError) as exc:
            log.error("scp: cannot spool: %s", exc)
            self.gate.trouble(exc)  # a full disk holds the service until it clears
            _unlink(received)
            return STATUS_OUT_OF_RESOURCES
        except Exception as exc:  # noqa: BLE001 - one bad push must not end the association
            log.warning("scp: cannot journal a pushed slice (%s)", type(exc).__name__)
            _unlink(received)
            return STATUS_CANNOT_UNDERSTAND
        finally:
            self.gate.release()
        self.on_accept(intake_of(item))
        return STATUS_SUCCESS

    def rejection(self, rq: dul.AssociateRq, live: int) -> Reject | None:
        """Why an association is rejected, or None; the reason is logged with no more of the
        peer's words than 16 printable characters of its calling AE title."""
        allowed = self.settings.calling_ae_titles
        why: Reject | None = None
        if not rq.protocol_version & 1:
            why, text = Reject.PROTOCOL_VERSION, "protocol version not supported"
        elif rq.application_context != dul.APPLICATION_CONTEXT:
            why, text = Reject.APPLICATION_CONTEXT, "application context not supported"
        elif rq.called_ae != self.ae_title.strip():
            why, text = Reject.CALLED_AE, "called AE title is not ours"
        elif allowed is not None and rq.calling_ae not in {a.strip() for a in allowed}:
            why, text = Reject.CALLING_AE, "calling AE title not allowed"
        elif live > self.settings.max_associations:
            why, text = Reject.LOCAL_LIMIT, f"already {self.settings.max_associations} associations"
        if why is not None:
            log.warning(
                "scp: association rejected: %s (calling AE %r)", text, _printable(rq.calling_ae)
            )
        return why

    # -- the listener ----------------------------------------------------------------------------
    def start(self) -> None:
        if self.settings.calling_ae_titles is None:
            log.warning("scp: no calling_ae_titles in the pipeline: any sender is accepted")
        try:
            infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
            family = infos[0][0] if infos else socket.AF_INET
            listener = socket.create_server((self.host, self.port), family=family, backlog=64)
        except (OSError, OverflowError) as exc:
            raise HxschedError(
                f"cannot listen for DICOM on {self.host}:{self.port}: "
                f"{getattr(exc, 'strerror', None) or exc}"
            ) from None
        self._listener = listener
        self._wake_r, self._wake_w = socket.socketpair()
        self.port = int(listener.getsockname()[1])
        self._thread = threading.Thread(target=self._serve, name="hxsched-scp", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        listener, wake = self._listener, self._wake_r
        assert listener is not None and wake is not None
        while True:
            try:
                ready, _, _ = select.select([listener, wake], [], [])
            except (OSError, ValueError):
                return
            if wake in ready:
                return
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with self._lock:
                if self._stopping or len(self._live) >= (
                    self.settings.max_associations + REJECT_HEADROOM
                ):
                    conn.close()  # a flood: no thread, no A-ASSOCIATE-RJ
                    continue
                assoc = _Association(self, conn)
                self._live.add(assoc)
            threading.Thread(target=assoc.run, name="hxsched-scp-assoc", daemon=True).start()

    def _ended(self, assoc: _Association) -> None:
        with self._lock:
            self._live.discard(assoc)

    def live(self) -> int:
        """How many connections are open now (associated or still negotiating)."""
        with self._lock:
            return len(self._live)

    def stop(self) -> None:
        """Stop listening, abort the associations still open and close the connections not
        yet associated."""
        if self._listener is None:
            return
        with self._lock:
            self._stopping = True
            live = list(self._live)
        assert self._wake_w is not None
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        for assoc in live:
            assoc.kill()
        for s in (self._listener, self._wake_r, self._wake_w):
            if s is not None:
                s.close()
        self._listener = self._wake_r = self._wake_w = None


class _Association:
    """One connection: A-ASSOCIATE negotiation, then P-DATA until release, abort, an idle
    timeout (the ARTIM timer before the request: PS3.8 AA-2) or a refused PDU."""

    def __init__(self, scp: ScpSource, conn: socket.socket) -> None:
        self.scp, self.conn = scp, conn
        s = scp.settings
        self.guard = PduGuard(s.max_pdu, s.max_bytes)
        self._send_lock = threading.Lock()
        self.established = False
        self.peer_max = 0
        self.contexts: dict[int, dul.ContextAnswer] = {}
        self.calling_ae = ""
        self.command = bytearray()
        self.pending: Command | None = None  # a C-STORE whose data set is arriving
        self.pending_cx = 0  # the presentation context it came under (the answer goes there)
        self.partial: tuple[int, Path] | None = None  # its spool file (descriptor, path)
        self.digest = hashlib.sha256()  # of the spool file as written (the journal's id)
        self.size = 0
        self.discard = False  # its data set is read and dropped (refused class, disk trouble)

    # -- I/O --------------------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        with self._send_lock:
            self.conn.sendall(data)

    def kill(self) -> None:
        """Abort from another thread (the service stopping): an A-ABORT once associated, then
        the connection shut so the association's thread reads its end."""
        if self.established:
            with contextlib.suppress(OSError):
                self.send(dul.abort())
        with contextlib.suppress(OSError):
            self.conn.shutdown(socket.SHUT_RDWR)

    def _pdu(self) -> tuple[int, bytearray] | None:
        """The next PDU (type, body) within the guard's limits; None once the peer closed or a
        PDU was refused (the refusal is logged and an A-ABORT sent)."""
        head = _recv_exactly(self.conn, 6)
        if len(head) < 6:
            return None
        why = self.guard.header(head)
        if why is None and not 1 <= head[0] <= 7:
            why = f"an unrecognised PDU (type 0x{head[0]:02X})"
        if why is not None:
            self._refuse(why, Abort.UNRECOGNIZED_PDU)
            return None
        (length,) = struct.unpack_from(">L", head, 2)
        body = _recv_exactly(self.conn, length)
        if len(body) < length:
            return None
        why = self.guard.body(body)
        if why is not None:
            self._refuse(why, Abort.INVALID_PARAMETER)
            return None
        return head[0], body

    def _refuse(self, why: str, reason: Abort) -> None:
        log.warning("scp: %s; aborting the association", why)
        with contextlib.suppress(OSError):
            self.send(dul.abort(reason))

    # -- the association ---------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self.conn.settimeout(self.scp.settings.idle_timeout_s)
            # a C-STORE-RSP (a small PDU) goes out at once, not held by Nagle's algorithm
            self.conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._associate():
                self._transfer()
        except TimeoutError:
            if self.established:  # idle: abort (an ARTIM expiry before the request: close)
                log.warning(
                    "scp: association idle for %.0f s; aborting it",
                    self.scp.settings.idle_timeout_s,
                )
                with contextlib.suppress(OSError):
                    self.send(dul.abort())
        except DulError as exc:
            self._refuse(str(exc), Abort.INVALID_PARAMETER)
        except OSError:
            pass  # the peer reset the connection, or the service stopped
        finally:
            self._drop_partial()
            with contextlib.suppress(OSError):
                self.conn.close()
            self.scp._ended(self)

    def _associate(self) -> bool:
        got = self._pdu()
        if got is None:
            return False
        pdu_type, body = got
        if pdu_type != dul.A_ASSOCIATE_RQ:
            self._refuse(
                f"a PDU of type 0x{pdu_type:02X} before A-ASSOCIATE-RQ", Abort.UNEXPECTED_PDU
            )
            return False
        rq = dul.parse_associate_rq(body)
        why = self.scp.rejection(rq, self.scp.live())
        if why is not None:
            self.send(dul.associate_rj(why))
            with contextlib.suppress(OSError):
                self.conn.shutdown(socket.SHUT_WR)
                self.conn.settimeout(2.0)
                self.conn.recv(64)  # the requestor closes (PS3.8 AE-4); do not wait for long
            return False
        answers = dul.negotiate(rq, self.scp.supported)
        self.contexts = {a.id: a for a in answers if a.result is dul.ContextResult.ACCEPTANCE}
        self.peer_max, self.calling_ae = rq.max_length, rq.calling_ae
        self.send(
            dul.associate_ac(
                rq,
                answers,
                max_length=self.scp.settings.max_pdu,
                implementation_class_uid=implementation_uid(),
                implementation_version=IMPLEMENTATION_VERSION,
            )
        )
        self.established = True
        return True

    def _transfer(self) -> None:
        while True:
            got = self._pdu()
            if got is None:
                return
            pdu_type, body = got
            if pdu_type == dul.P_DATA_TF:
                if not self._p_data(body):
                    return
            elif pdu_type == dul.A_RELEASE_RQ:
                self.send(dul.RELEASE_RP)
                return
            elif pdu_type == dul.A_ABORT:
                return
            else:
                self._refuse(f"an unexpected PDU (type 0x{pdu_type:02X})", Abort.UNEXPECTED_PDU)
                return

    def _p_data(self, body: bytearray) -> bool:
        """Act on one P-DATA-TF PDU; False when the association was aborted."""
        for context_id, control, fragment in dul.pdvs(body):
            cx = self.contexts.get(context_id)
            if cx is None:
                self._refuse(
                    "a PDV under a presentation context not accepted", Abort.UNEXPECTED_PARAMETER
                )
                return False
            last = bool(control & 2)
            if control & 1:  # a command fragment
                if self.pending is not None or len(self.command) + len(fragment) > COMMAND_MAX:
                    self._refuse(
                        "a command set out of turn or too long", Abort.UNEXPECTED_PARAMETER
                    )
                    return False
                self.command += fragment
                if last:
                    command, self.command = dul.parse_command(self.command), bytearray()
                    if not self._command(command, cx):
                        return False
            else:  # a data set fragment
                if self.pending is None:
                    self._refuse("a data set without its command", Abort.UNEXPECTED_PARAMETER)
                    return False
                self._write(fragment)
                if last:
                    self._stored()
        return True

    def _command(self, command: Command, cx: dul.ContextAnswer) -> bool:
        if command.field == dul.C_ECHO_RQ and not command.has_data_set:
            self._respond(cx.id, dul.response(command, STATUS_SUCCESS))
            return True
        if command.field != dul.C_STORE_RQ or not command.has_data_set:
            self._refuse(
                f"a DIMSE command 0x{command.field:04X} this SCP does not take",
                Abort.UNEXPECTED_PARAMETER,
            )
            return False
        # a class we do not take, sent under an accepted context: read, dropped, 0x0122
        self.pending, self.pending_cx = command, cx.id
        self.discard = command.sop_class not in self.scp.settings.sop_classes
        if not self.discard:
            self._open(command, cx.transfer_syntax)
        return True

    def _open(self, command: Command, transfer_syntax: str) -> None:
        try:
            fd, name = tempfile.mkstemp(
                prefix=TMP_PREFIX + "scp-", suffix=".dcm", dir=self.scp.journal.spool_dir
            )
            self.partial = (fd, Path(name))
            self.digest, self.size = hashlib.sha256(), 0
            head = dul.file_header(
                command.sop_class,
                command.sop_instance,
                transfer_syntax,
                implementation_class_uid=implementation_uid(),
                implementation_version=IMPLEMENTATION_VERSION,
                source_ae=self.calling_ae,
            )
            self._write(memoryview(head))
        except OSError as exc:
            self._write_failed(exc)

    def _write(self, fragment: memoryview) -> None:
        if self.discard or self.partial is None:
            return
        self.digest.update(fragment)
        self.size += len(fragment)
        try:
            fd = self.partial[0]
            while fragment:
                fragment = fragment[os.write(fd, fragment) :]
        except OSError as exc:
            self._write_failed(exc)

    def _write_failed(self, exc: OSError) -> None:
        self._drop_partial()
        self.discard = True
        log.error("scp: cannot spool a pushed slice: %s", exc.strerror or type(exc).__name__)
        self.scp.gate.trouble(exc)  # a full disk holds the service until it clears

    def _stored(self) -> None:
        command, self.pending = self.pending, None
        assert command is not None
        received: Path | None = None
        hashed: Spooled | None = None
        if self.partial is not None:
            fd, path = self.partial
            try:
                os.fsync(fd)  # durable before the journal takes it (it does not read it again)
            except OSError as exc:
                self._write_failed(exc)
            else:
                self.partial = None
                os.close(fd)
                received, hashed = path, Spooled(self.digest.hexdigest(), self.size)
        status = self.scp.store(command.sop_class, command.sop_instance, received, hashed)
        self._respond(self.pending_cx, dul.response(command, status))
        self.discard = False

    def _respond(self, context_id: int, command: bytes) -> None:
        for pdu in dul.p_data(context_id, command, command=True, max_length=self.peer_max):
            self.send(pdu)

    def _drop_partial(self) -> None:
        """A connection closed (or a write failed) mid data set: remove its spool file."""
        if self.partial is not None:
            fd, path = self.partial
            self.partial = None
            with contextlib.suppress(OSError):
                os.close(fd)
            _unlink(path)


def _unlink(path: Path | None) -> None:
    if path is not None:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _printable(text: str) -> str:
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text[:16])


@functools.cache
def implementation_uid() -> str:
    """The Implementation Class UID this SCP announces: the one in every output's file meta."""
    from hxsched.runtime.service.dicom_io import _uid

    return str(_uid("implementation"))


@functools.lru_cache(maxsize=1)
def transfer_syntaxes() -> tuple[str, ...]:
    """The transfer syntaxes accepted for storage: the uncompressed ones, and the compressed
    ones pydicom can decode in this installation (a sender then falls back to one of these
    rather than push what would be quarantined)."""
    from pydicom.uid import AllTransferSyntaxes

    def decodable(uid: str) -> bool:
        try:
            from pydicom.pixels import get_decoder  # pydicom >= 3
        except ImportError:
            return False
        try:
            return bool(get_decoder(uid).is_available)
        except (NotImplementedError, ValueError):
            return False

    return UNCOMPRESSED + tuple(
        t for t in AllTransferSyntaxes if t not in UNCOMPRESSED and decodable(t)
    )


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
    """``nr_bytes`` from ``raw`` (fewer once the peer closes), one ``recv_into`` per arriving
    segment."""
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
