"""What a source hands over and how it is held back: the intake outcome, the journal's gate
(admission by reservation, at most ``queue`` unfinished slices) and what counts as resource trouble."""

from __future__ import annotations

import contextlib
import enum
import threading
import time
from collections.abc import Callable, Iterator

from hxsched.errors import ResourceError
from hxsched.runtime.service.journal import Journal
from hxsched.runtime.service.journal import resource_trouble as journal_trouble

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700  # "Refused: Out of Resources" (PS3.4 C-STORE)


class Intake(str, enum.Enum):
    """What became of a slice a source handed over."""

    ACCEPTED = "accepted"  # durably spooled, waiting for the worker
    DUPLICATE = "duplicate"  # received before: counted, not redone
    QUARANTINED = "quarantined"  # refused at intake (oversize, ...): the reason goes with it

    def __str__(self) -> str:
        return self.value


def intake_of(item) -> Intake:
    return Intake.DUPLICATE if item.duplicate else Intake.ACCEPTED


def resource_trouble(exc: BaseException | None) -> str | None:
    """What machine trouble ``exc`` (or what caused it) is, one line without file names, or
    None when it is not any: a ResourceError, or what the journal counts as resource trouble
    (ENOSPC, EDQUOT, EIO, EROFS, SQLite's "disk is full")."""
    for _ in range(8):
        if exc is None:
            return None
        why = journal_trouble(exc)
        if why is not None:
            return why
        if isinstance(exc, ResourceError):
            return resource_trouble(exc.__cause__ or exc.__context__) or exc.message
        exc = exc.__cause__ or exc.__context__
    return None


class Gate:
    """Back-pressure by reservation: a source reserves room before it spools (``admit``), so
    the journal's unfinished slices plus the reservations never exceed ``limit``, however
    many sources (C-STORE associations, the folder, the phantom) ask at once. While the
    service is held (resource trouble) nothing is admitted."""

    POLL_S = 0.02

    def __init__(
        self,
        journal: Journal,
        limit: int,
        stop: threading.Event,
        on_trouble: Callable[[str], None] | None = None,
    ) -> None:
        self.journal, self.limit, self.stop = journal, limit, stop
        self.on_trouble = on_trouble  # the service holds itself (readiness false, probe)
        self.held = 0  # how often a source had to wait
        self.held_reason = ""  # non-empty while the service is held: nothing is admitted
        self._cond = threading.Condition()
        self._reserved = 0

    @property
    def reserved(self) -> int:
        return self._reserved

    def room(self) -> int:
        """How many more slices could be reserved now (0 while held)."""
        if self.held_reason:
            return 0
        return max(0, self.limit - self.journal.pending() - self._reserved)

    def acquire(self, timeout_s: float | None = None, n: int = 1) -> int:
        """Reserve room for up to ``n`` slices (at least one); how many were reserved, 0 on stop,
        timeout or hold. Give them back with ``release`` once spooled (or refused)."""
        t0 = time.monotonic()
        waited = False
        with self._cond:
            while not self.stop.is_set():
                got = min(n, self.room())
                if got > 0:
                    self._reserved += got
                    return got
                if timeout_s is not None and time.monotonic() - t0 >= timeout_s:
                    return 0
                if not waited:
                    self.held += 1
                    waited = True
                self._cond.wait(self.POLL_S)  # pending falls without notice: poll
        return 0

    def release(self, n: int = 1) -> None:
        with self._cond:
            self._reserved = max(0, self._reserved - n)
            self._cond.notify_all()

    @contextlib.contextmanager
    def admit(self, timeout_s: float | None = None, n: int = 1) -> Iterator[int]:
        """``with gate.admit(30.0) as ok:`` — ``ok`` is how many slices may be spooled inside
        the block (0: refused). Resource trouble raised inside holds the service."""
        got = self.acquire(timeout_s, n)
        try:
            yield got
        except BaseException as exc:
            self.trouble(exc)
            raise
        finally:
            if got:
                self.release(got)

    def wait(self, timeout_s: float | None = None) -> bool:
        """True once there is room (reserving nothing: prefer ``admit``); False on stop,
        timeout or hold."""
        got = self.acquire(timeout_s)
        self.release(got)
        return bool(got)

    def trouble(self, exc: BaseException) -> bool:
        """If ``exc`` is resource trouble, hold the service; True when it was."""
        what = resource_trouble(exc)
        if what is None:
            return False
        self.hold(what)
        return True

    def hold(self, reason: str) -> None:
        """Admit nothing until ``resume``; the service is told (it probes and resumes)."""
        self.held_reason = reason
        if self.on_trouble is not None:
            self.on_trouble(reason)

    def resume(self) -> None:
        with self._cond:
            self.held_reason = ""
            self._cond.notify_all()
