"""Where slices come from: a watched folder (``inbox.py``), a DICOM C-STORE SCP (``scp.py``), a
synthetic phantom (here). Each hands a slice to the journal and lets go of it only once it is
durably spooled; when the journal is full they hold back (``intake.py``)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from hxsched.runtime.service.inbox import FolderSource
from hxsched.runtime.service.intake import Gate, Intake, intake_of
from hxsched.runtime.service.journal import Item, Journal
from hxsched.runtime.service.pipeline import SourceKind
from hxsched.runtime.service.scp import ScpSource

__all__ = ["FolderSource", "Gate", "Intake", "PhantomSource", "ScpSource"]


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
                data = encode_ct_dicom(synthetic_phantom(k))
                item = None
                while item is None:  # resource trouble holds the gate: retried once it clears
                    with self.gate.admit() as ok:  # a reservation: the queue bound holds
                        if not ok:
                            return
                        item = self._accept(data, f"phantom_{k:06d}.dcm")
                self.on_accept(intake_of(item))
                if self.interval_ms:
                    self.gate.stop.wait(self.interval_ms / 1000.0)
        finally:
            self.done.set()

    def _accept(self, data: bytes, name: str) -> Item | None:
        try:
            return self.journal.accept(data, name, SourceKind.PHANTOM)
        except Exception as exc:
            if self.gate.trouble(exc):
                return None
            raise
