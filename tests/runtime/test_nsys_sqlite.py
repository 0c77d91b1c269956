"""The nsys SQLite reader, on an export built from NVIDIA's documented schema (no recorded export
from a Jetson is in the repository yet)."""

from __future__ import annotations

import sqlite3

import pytest

from hxsched.errors import HxschedError
from hxsched.runtime.nsys_sqlite import read_nsys_sqlite

MS = 1_000_000  # ns


def _export(path):
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE StringIds (id INTEGER PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE NVTX_EVENTS (start INT NOT NULL, end INT, eventType INT NOT NULL,
            rangeId INT, category INT, color INT, text TEXT, globalTid INT, endGlobalTid INT,
            textId INT, domainId INT);
        CREATE TABLE CUPTI_ACTIVITY_KIND_RUNTIME (start INT NOT NULL, end INT NOT NULL,
            eventClass INT, globalTid INT, correlationId INT, nameId INT, returnValue INT);
        CREATE TABLE CUPTI_ACTIVITY_KIND_KERNEL (start INT NOT NULL, end INT NOT NULL,
            deviceId INT, contextId INT, streamId INT, correlationId INT, shortName INT);
        CREATE TABLE CUPTI_ACTIVITY_KIND_MEMCPY (start INT NOT NULL, end INT NOT NULL,
            deviceId INT, contextId INT, streamId INT, correlationId INT, bytes INT, copyKind INT);
        """
    )
    db.execute("INSERT INTO StringIds VALUES (1, 'yolo#0/s1 f0')")
    # GPU segment, frame 0 (name through StringIds) and 1 (inline text); a DLA segment (no CUDA)
    nvtx = [
        (0 * MS, 1 * MS, 59, None, 7, 1),
        (10 * MS, 11 * MS, 59, "yolo#0/s1 f1", 7, None),
        (0 * MS, 1 * MS, 59, "yolo#0/s0 f0", 8, None),
        (0 * MS, 9 * MS, 59, "frame 0 out", 7, None),  # not a segment range
    ]
    for start, end, et, text, tid, text_id in nvtx:
        db.execute(
            "INSERT INTO NVTX_EVENTS (start, end, eventType, text, globalTid, textId) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (start, end, et, text, tid, text_id),
        )
    db.executemany(
        "INSERT INTO CUPTI_ACTIVITY_KIND_RUNTIME (start, end, globalTid, correlationId) "
        "VALUES (?, ?, ?, ?)",
        [(MS // 2, MS // 2 + 10, 7, 100), (10 * MS + 5, 10 * MS + 20, 7, 101)],
    )
    db.executemany(
        "INSERT INTO CUPTI_ACTIVITY_KIND_KERNEL (start, end, streamId, correlationId) "
        "VALUES (?, ?, 1, ?)",
        [(2 * MS, 5 * MS, 100), (12 * MS, 14 * MS, 101)],
    )
    db.execute(
        "INSERT INTO CUPTI_ACTIVITY_KIND_MEMCPY (start, end, streamId, correlationId) "
        "VALUES (?, ?, 1, 100)",
        (5 * MS, 6 * MS),
    )
    db.commit()
    db.close()


def test_segments_get_their_kernels_and_copies(tmp_path):
    path = tmp_path / "run.sqlite"
    _export(path)
    tl = read_nsys_sqlite(path, {"yolo#0/s0": "dla0", "yolo#0/s1": "gpu"})
    runs = {(r.segment, r.frame): r for r in tl.runs}
    assert set(runs) == {("yolo#0/s1", 0), ("yolo#0/s1", 1), ("yolo#0/s0", 0)}
    gpu0 = runs[("yolo#0/s1", 0)]
    assert (gpu0.start_ms, gpu0.end_ms, gpu0.host_range) == (2.0, 6.0, False)  # kernel + copy
    assert (runs[("yolo#0/s1", 1)].start_ms, runs[("yolo#0/s1", 1)].end_ms) == (12.0, 14.0)
    assert runs[("yolo#0/s0", 0)].host_range  # no CUDA activity: the NVTX range stands in
    assert tl.busy_ms == {"dla0": 1.0, "gpu": 6.0}
    assert tl.overlap_ms == 0.0 and tl.span_ms == 14.0


def test_not_an_export_is_one_line(tmp_path):
    bad = tmp_path / "x.sqlite"
    bad.write_bytes(b"not sqlite at all" * 10)
    with pytest.raises(HxschedError, match="not an nsys SQLite export|NVTX_EVENTS"):
        read_nsys_sqlite(bad, {})
    with pytest.raises(HxschedError, match="no such"):
        read_nsys_sqlite(tmp_path / "missing.sqlite", {})


def test_bench_reads_an_export_beside_its_run(small_plan, tmp_path, capsys):
    import json

    from json_schema_check import SCHEMA, schema_errors

    from hxsched.cli import main
    from hxsched.scheduler.planning.plan import save_plan

    path = tmp_path / "run.sqlite"
    _export(path)
    plan = save_plan(small_plan, tmp_path / "p.yaml")
    args = ["bench", str(plan), "--backend", "sim", "--duration", "0.1", "--nsys-sqlite", str(path)]
    assert main([*args, "--json", "-q"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert schema_errors(d, json.loads(SCHEMA.read_text())) == []
    assert d["nsys"]["segment_runs"] == 3 and d["nsys"]["span_ms"] == 14.0
