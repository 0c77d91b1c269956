"""Where slices come from: a watched folder, a DICOM C-STORE SCP, a synthetic phantom. Each
hands a slice to the journal and lets go of it only once it is durably spooled; when the
journal is full they hold back (the folder leaves files in place, the SCP delays its answer)."""

from __future__ import annotations

import enum
import io
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hxsched._compat import require
from hxsched.runtime.service.dicom_io import Reason
from hxsched.runtime.service.journal import Journal, SpoolError
from hxsched.runtime.service.pipeline import SourceKind

log = logging.getLogger("hxsched.service")

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700  # "Refused: Out of Resources" (PS3.4 C-STORE)
SUFFIXES = {".dcm", ".dicom", ".png", ".tif", ".tiff", ""}


class Intake(str, enum.Enum):
    """What became of a slice a source handed over."""

    ACCEPTED = "accepted"  # durably spooled, waiting for the worker
    DUPLICATE = "duplicate"  # received before: counted, not redone
    QUARANTINED = "quarantined"  # refused unread (over the size limit)

    def __str__(self) -> str:
        return self.value


def _intake(item) -> Intake:
    return Intake.DUPLICATE if item.duplicate else Intake.ACCEPTED


class Gate:
    """Back-pressure: sources wait while the journal holds ``limit`` unfinished slices."""

    def __init__(self, journal: Journal, limit: int, stop: threading.Event) -> None:
        self.journal, self.limit, self.stop = journal, limit, stop
        self.held = 0  # how often a source had to wait

    def wait(self, timeout_s: float | None = None) -> bool:
        """True once there is room; False on stop or timeout."""
        t0 = time.monotonic()
        waited = False
        while self.journal.pending() >= self.limit:
            if self.stop.is_set() or (timeout_s is not None and time.monotonic() - t0 > timeout_s):
                return False
            if not waited:
                self.held += 1
                waited = True
            time.sleep(0.02)
        return not self.stop.is_set()


class FolderSource(threading.Thread):
    """Polls a folder; a file is taken once its size is stable across two polls and it is
    MIN_AGE_S old. Accepted files are removed from the folder; oversize files are quarantined
    without reading them."""

    MIN_AGE_S = 0.5
    BATCH = 64  # files per journal commit at most

    def __init__(
        self,
        folder: Path,
        journal: Journal,
        gate: Gate,
        *,
        max_bytes: int,
        on_accept: Callable[[Intake], None],
        poll_s: float = 0.1,
    ) -> None:
        super().__init__(name="hxsched-folder", daemon=True)
        self.folder, self.journal, self.gate = folder, journal, gate
        self.max_bytes, self.on_accept, self.poll_s = max_bytes, on_accept, poll_s
        self._sizes: dict[str, int] = {}
        self._bad: set[str] = set()  # names that could not be taken: left in place, skipped
        folder.mkdir(parents=True, exist_ok=True)

    def candidates(self) -> list[Path]:
        """Files whose size held across two polls and that were last written MIN_AGE_S ago."""
        out = []
        sizes: dict[str, int] = {}
        now = time.time()
        try:
            entries = []
            for e in os.scandir(self.folder):
                if e.name.startswith(".") or e.name.endswith((".tmp", ".part")):
                    continue
                if e.name in self._bad or not e.is_file():
                    continue
                st = e.stat()
                entries.append((st.st_mtime, e.name, e.path, st.st_size))
        except OSError:
            return []
        for mtime, name, path, size in sorted(entries):
            if self._sizes.get(name) == size and now - mtime >= self.MIN_AGE_S:
                out.append(Path(path))
            sizes[name] = size
        self._sizes = sizes  # names that vanished are forgotten
        return out

    def take(self, path: Path) -> None:
        name = path.name
        size = path.stat().st_size
        if size > self.max_bytes:
            self.journal.quarantine_file(
                path,
                name,
                Reason.OVERSIZE,
                f"{size} bytes is over the limit of {self.max_bytes}",
                source=SourceKind.FOLDER,
                max_bytes=4096,
            )
            path.unlink(missing_ok=True)
            self.on_accept(Intake.QUARANTINED)
            return
        item = self.journal.accept(path, name, SourceKind.FOLDER)
        path.unlink(missing_ok=True)  # durably spooled: the folder's copy can go
        self._sizes.pop(name, None)
        self.on_accept(_intake(item))

    def take_many(self, paths: list[Path]) -> None:
        """Several files in one journal commit (group commit); oversize ones one by one."""
        batch: list[tuple[Path, int]] = []
        for path in paths:
            size = path.stat().st_size
            if size > self.max_bytes:
                self.take(path)
            else:
                batch.append((path, size))
        got = self.journal.accept_many([(p, p.name, SourceKind.FOLDER) for p, _ in batch])
        for (path, _), item in zip(batch, got, strict=True):
            if isinstance(item, Exception):
                self._refused(path, item)
                continue
            path.unlink(missing_ok=True)  # durably spooled: the folder's copy can go
            self._sizes.pop(path.name, None)
            self.on_accept(_intake(item))

    def _refused(self, path: Path, exc: Exception) -> None:
        log.error("folder source: cannot take a file (%s); leaving it in place", type(exc).__name__)
        self._bad.add(path.name)

    def run(self) -> None:
        while not self.gate.stop.is_set():
            todo = self.candidates()
            while todo:
                if not self.gate.wait():
                    return
                room = max(1, min(self.BATCH, self.gate.limit - self.journal.pending()))
                batch, todo = todo[:room], todo[room:]
                try:
                    self.take_many(batch)
                except FileNotFoundError:
                    for path in batch:
                        self._sizes.pop(path.name, None)
                except Exception as exc:  # noqa: BLE001 - one file never stops the source
                    self._take_each(batch, exc)
            self.gate.stop.wait(self.poll_s)

    def _take_each(self, batch: list[Path], first: Exception) -> None:
        """A batch failed: the files one by one, so that only the bad one is set aside."""
        for path in batch:
            try:
                if path.exists():
                    self.take(path)
            except FileNotFoundError:
                self._sizes.pop(path.name, None)
            except Exception as exc:  # noqa: BLE001
                self._refused(path, exc)


class PhantomSource(threading.Thread):
    """Synthetic CT head phantoms as DICOM, for demos and soak runs."""

    def __init__(
        self,
        journal: Journal,
        gate: Gate,
        *,
        count: int,
        interval_ms: float,
        on_accept: Callable[[Intake], None],
        start: int = 0,
    ) -> None:
        super().__init__(name="hxsched-phantom", daemon=True)
        self.journal, self.gate, self.count = journal, gate, count
        self.interval_ms, self.on_accept, self.first = interval_ms, on_accept, start
        self.done = threading.Event()

    def run(self) -> None:
        from hxsched.runtime.service.dicom_io import encode_ct_dicom, synthetic_phantom

        try:
            for k in range(self.first, self.first + self.count):
                if not self.gate.wait():
                    return
                data = encode_ct_dicom(synthetic_phantom(k))
                item = self.journal.accept(data, f"phantom_{k:06d}.dcm", SourceKind.PHANTOM)
                self.on_accept(_intake(item))
                if self.interval_ms:
                    self.gate.stop.wait(self.interval_ms / 1000.0)
        finally:
            self.done.set()


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
    ) -> None:
        self.journal, self.gate, self.on_accept = journal, gate, on_accept
        self.host, self.port, self.ae_title, self.wait_s = host, port, ae_title, wait_s
        self._server: Any = None  # pynetdicom's ThreadedAssociationServer once started

    def handle_store(self, event) -> int:
        if not self.gate.wait(self.wait_s):
            log.warning("scp: journal full for %.0f s; answering out of resources", self.wait_s)
            return STATUS_OUT_OF_RESOURCES
        try:
            data = _encoded(event)
            item = self.journal.accept(data, "scp.dcm", SourceKind.SCP)
        except SpoolError as exc:
            log.error("scp: cannot spool: %s", exc)
            return STATUS_OUT_OF_RESOURCES
        except Exception as exc:  # noqa: BLE001 - a malformed push must not stop the SCP
            log.warning(
                "scp: cannot encode a pushed dataset (%s); spooling refused", type(exc).__name__
            )
            return 0xC000  # "Error: Cannot understand"
        self.on_accept(_intake(item))
        return STATUS_SUCCESS

    def start(self) -> None:
        require("pynetdicom", extra="service")
        from pynetdicom import AE, evt
        from pynetdicom.presentation import AllStoragePresentationContexts

        from hxsched.errors import HxschedError

        ae = AE(ae_title=self.ae_title)
        ae.supported_contexts = AllStoragePresentationContexts
        ae.add_supported_context("1.2.840.10008.1.1")  # Verification (C-ECHO)
        try:
            self._server = ae.start_server(
                (self.host, self.port),
                block=False,
                evt_handlers=[(evt.EVT_C_STORE, self.handle_store)],
            )
        except (OSError, OverflowError) as exc:
            raise HxschedError(
                f"cannot listen for DICOM on {self.host}:{self.port}: "
                f"{getattr(exc, 'strerror', None) or exc}"
            ) from None
        self.port = int(self._server.server_address[1])

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None


def _encoded(event) -> bytes:
    """The pushed dataset as a DICOM file (preamble, file meta, dataset as received)."""
    try:
        return bytes(event.encoded_dataset())
    except AttributeError:  # pynetdicom < 2
        ds = event.dataset
        ds.file_meta = event.file_meta
        buf = io.BytesIO()
        ds.save_as(buf, write_like_original=False)
        return buf.getvalue()
