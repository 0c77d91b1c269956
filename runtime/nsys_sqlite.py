"""Read an Nsight Systems SQLite export (``nsys export --type sqlite``) into per-segment device
times, per-accelerator busy time and overlap, for ``hxsched bench``'s measured timeline.

Tables and columns as NVIDIA documents them ("SQLite Export Schema Reference", Nsight Systems
export documentation): ``StringIds(id, value)``; ``NVTX_EVENTS(start, end, eventType, text,
textId, globalTid)`` with eventType 59 (push/pop range) and 60 (start/end range);
``CUPTI_ACTIVITY_KIND_RUNTIME(start, end, globalTid, correlationId)``;
``CUPTI_ACTIVITY_KIND_KERNEL`` and ``CUPTI_ACTIVITY_KIND_MEMCPY(start, end, correlationId)``.
Times are nanoseconds. A GPU activity belongs to the hxsched segment whose NVTX range
(``SEGMENT fFRAME``, as the trt backend annotates each enqueue) encloses the runtime call that
launched it on the same thread. A segment with no CUDA activity (a DLA segment: its work is in
the Tegra accelerator trace, not read here) keeps its NVTX range, marked ``host_range``.
"""

from __future__ import annotations

import re
import sqlite3
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path

from hxsched.errors import HxschedError

RANGE_EVENT_TYPES = (59, 60)  # NvtxPushPopRange, NvtxStartEndRange
SEGMENT_RANGE = re.compile(r"^(?P<segment>\S+/s\d+) f(?P<frame>\d+)$")


@dataclass(frozen=True)
class SegmentRun:
    segment: str
    frame: int
    start_ms: float
    end_ms: float
    host_range: bool  # no CUDA activity found: the NVTX (host) range stands in


@dataclass(frozen=True)
class NsysTimeline:
    runs: tuple[SegmentRun, ...]
    busy_ms: dict[str, float]  # per accelerator: union of its segments' spans
    overlap_ms: float  # time with two or more accelerators busy
    span_ms: float


def _tables(db: sqlite3.Connection) -> set[str]:
    return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def _ranges(db: sqlite3.Connection) -> list[tuple[int, int, int, str, int]]:
    """(globalTid, start, end, segment, frame) of every hxsched segment range."""
    strings = (
        dict(db.execute("SELECT id, value FROM StringIds")) if "StringIds" in _tables(db) else {}
    )
    marks = ",".join("?" * len(RANGE_EVENT_TYPES))
    rows = db.execute(
        f"SELECT globalTid, start, end, text, textId FROM NVTX_EVENTS WHERE eventType IN ({marks})",
        RANGE_EVENT_TYPES,
    )
    out = []
    for tid, start, end, text, text_id in rows:
        m = SEGMENT_RANGE.match(text or strings.get(text_id, "") or "")
        if m and end is not None and end >= start:
            out.append((tid, start, end, m["segment"], int(m["frame"])))
    return sorted(out)


def read_nsys_sqlite(path: str | Path, accelerators: dict[str, str]) -> NsysTimeline:
    """The hxsched segments in the export at ``path``; ``accelerators``: segment -> accelerator."""
    from hxsched.cli.bench import overlap_length, union_length

    if not Path(path).is_file():
        raise HxschedError("no such nsys SQLite export", path=str(path))
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        tables = _tables(db)
    except sqlite3.DatabaseError as exc:
        raise HxschedError(f"not an nsys SQLite export: {exc}", path=str(path)) from None
    if "NVTX_EVENTS" not in tables:
        raise HxschedError("no NVTX_EVENTS table: record with --trace=cuda,nvtx", path=str(path))
    with db:
        ranges = _ranges(db)
        spans = _device_spans(db, tables, ranges)
    db.close()
    runs = []
    for k, (_, start, end, seg, frame) in enumerate(ranges):
        a, b = spans.get(k, (start, end))
        runs.append(SegmentRun(seg, frame, a / 1e6, b / 1e6, k not in spans))
    per: dict[str, list[tuple[float, float]]] = {}
    for r in runs:
        per.setdefault(accelerators.get(r.segment, "?"), []).append((r.start_ms, r.end_ms))
    lo = min((r.start_ms for r in runs), default=0.0)
    hi = max((r.end_ms for r in runs), default=0.0)
    return NsysTimeline(
        tuple(runs),
        {a: union_length(s) for a, s in sorted(per.items())},
        overlap_length(per),
        hi - lo,
    )


def _device_spans(db, tables: set[str], ranges) -> dict[int, tuple[int, int]]:
    """Range index -> (first start, last end) of the GPU activities it launched."""
    if "CUPTI_ACTIVITY_KIND_RUNTIME" not in tables:
        return {}
    by_tid: dict[int, list[tuple[int, int, int]]] = {}
    for k, (tid, start, end, _, _) in enumerate(ranges):
        by_tid.setdefault(tid, []).append((start, end, k))
    owner: dict[int, int] = {}  # correlationId -> range index
    calls = db.execute("SELECT globalTid, start, correlationId FROM CUPTI_ACTIVITY_KIND_RUNTIME")
    for tid, start, corr in calls:
        lst = by_tid.get(tid, [])
        i = bisect_right(lst, (start, float("inf"), 0)) - 1
        while i >= 0 and lst[i][1] < start:  # innermost enclosing: walk back past ended ranges
            i -= 1
        if i >= 0 and lst[i][0] <= start <= lst[i][1]:
            owner[corr] = lst[i][2]
    spans: dict[int, tuple[int, int]] = {}
    for table in ("CUPTI_ACTIVITY_KIND_KERNEL", "CUPTI_ACTIVITY_KIND_MEMCPY"):
        if table not in tables:
            continue
        for start, end, corr in db.execute(f"SELECT start, end, correlationId FROM {table}"):
            idx = owner.get(corr)
            if idx is not None:
                a, b = spans.get(idx, (start, end))
                spans[idx] = (min(a, start), max(b, end))
    return spans
