"""What planning needs of a model file (structural hash, node order), remembered by file identity.

Planning with a shipped or found profile needs two facts about each model: its structural hash
(to find the profile) and its node names in order (to check the profile's groups). Reading them
means parsing and checking the whole ONNX file, which for a 200 MB Pix2Pix costs more than the
plan itself. So they are kept in the cache folder (``HXSCHED_CACHE_DIR``), keyed like git's index
by the file's identity — absolute path, size, modification and change times in nanoseconds,
inode and device — plus the ``--shape`` overrides and hxsched's version: a file that changes in
any way a file system records is read again. A cache entry that cannot be read is ignored.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from hxsched import __version__
from hxsched.config import settings
from hxsched.errors import ModelError
from hxsched.scheduler.graph.graph import Graph

log = logging.getLogger(__name__)

SCHEMA = "hxsched.model-summary/2"


@dataclass(frozen=True)
class ModelSummary:
    path: str
    structural_hash: str
    node_names: tuple[str, ...]
    folded: tuple[int, ...] = ()  # nodes the hash's canonical form folds away (BatchNorms)

    @classmethod
    def of(cls, graph: Graph) -> ModelSummary:
        from hxsched.scheduler.graph.structure import canonical, structural_hash

        names = tuple(n.name for n in graph.nodes)
        folded = tuple(sorted(canonical(graph).folded))
        return cls(str(graph.path), structural_hash(graph), names, folded)


def _key(path: Path, shapes: Mapping[str, tuple[int, ...]]) -> str | None:
    try:
        st = path.stat()
    except OSError:
        return None
    ident = [
        str(path.resolve()),
        st.st_size,
        st.st_mtime_ns,
        st.st_ctime_ns,
        st.st_ino,
        st.st_dev,
        sorted((k, list(v)) for k, v in shapes.items()),
        __version__,
        SCHEMA,
    ]
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()


def _entry(key: str) -> Path:
    return settings().cache_dir / "models" / f"{key}.json"


def _read(key: str, path: str) -> ModelSummary | None:
    try:
        data = json.loads(_entry(key).read_text())
        if data.get("schema") != SCHEMA:
            return None
        return ModelSummary(
            path,
            str(data["structural_hash"]),
            tuple(data["node_names"]),
            tuple(int(i) for i in data["folded"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write(key: str, summary: ModelSummary) -> None:
    from hxsched.files import atomic_write

    data = {
        "schema": SCHEMA,
        "structural_hash": summary.structural_hash,
        "node_names": list(summary.node_names),
        "folded": list(summary.folded),
    }
    try:
        atomic_write(_entry(key), json.dumps(data).encode())
    except OSError as exc:  # a read-only or full cache only costs time next run
        log.debug(f"model summary not cached ({exc.strerror})")


def summarize(
    path: str | os.PathLike[str], shapes: Mapping[str, tuple[int, ...]] | None = None
) -> tuple[ModelSummary, Graph | None]:
    """The model's summary, and its graph when the file had to be read for it."""
    p = Path(path)
    shapes = dict(shapes or {})
    if not p.is_file():
        from hxsched.scheduler.graph.onnx_io import load_model

        load_model(p, shapes)  # raises the usual one-line error
        raise ModelError("not a readable file", path=p)  # pragma: no cover
    key = _key(p, shapes)
    if key is not None:
        cached = _read(key, str(path))
        if cached is not None:
            log.debug(f"{path}: structural hash and node order from the model cache")
            return cached, None
    from hxsched.scheduler.graph.onnx_io import load_model  # only when the file must be read

    graph = load_model(p, shapes)
    summary = ModelSummary.of(graph)
    if key is not None:
        _write(key, summary)
    return summary, graph
