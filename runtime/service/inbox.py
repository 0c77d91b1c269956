"""The folder source: files dropped into an inbox are taken once complete, spooled into the
journal and removed from the inbox; oversize files are quarantined unread."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from hxsched.runtime.service.dicom_io import Reason
from hxsched.runtime.service.intake import Gate, Intake, intake_of
from hxsched.runtime.service.journal import Journal
from hxsched.runtime.service.pipeline import SourceKind

log = logging.getLogger("hxsched.service")

SUFFIXES = {".dcm", ".dicom", ".png", ".tif", ".tiff", ""}


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
        self.on_accept(intake_of(item))

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
            self.on_accept(intake_of(item))

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
