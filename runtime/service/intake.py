"""What a source hands over and how it is held back: the intake outcome and the journal's gate
(back-pressure while the journal holds ``queue`` unfinished slices)."""

from __future__ import annotations

import enum
import threading
import time

from hxsched.runtime.service.journal import Journal

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700  # "Refused: Out of Resources" (PS3.4 C-STORE)


class Intake(str, enum.Enum):
    """What became of a slice a source handed over."""

    ACCEPTED = "accepted"  # durably spooled, waiting for the worker
    DUPLICATE = "duplicate"  # received before: counted, not redone
    QUARANTINED = "quarantined"  # refused unread (over the size limit)

    def __str__(self) -> str:
        return self.value


def intake_of(item) -> Intake:
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
