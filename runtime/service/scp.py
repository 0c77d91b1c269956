"""The DICOM C-STORE SCP source (pynetdicom): a scanner or PACS pushes slices; each is answered
Success once durably spooled."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from typing import Any

from hxsched._compat import require
from hxsched.runtime.service.intake import (
    STATUS_OUT_OF_RESOURCES,
    STATUS_SUCCESS,
    Gate,
    Intake,
    intake_of,
)
from hxsched.runtime.service.journal import Journal, SpoolError
from hxsched.runtime.service.pipeline import SourceKind

log = logging.getLogger("hxsched.service")


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
        self.on_accept(intake_of(item))
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
