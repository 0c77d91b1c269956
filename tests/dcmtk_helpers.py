"""Finding DCMTK's command-line tools: pynetdicom installs Python scripts of the same names
(``storescu``, ``findscu``...) into the virtual environment, which comes first on PATH."""

from __future__ import annotations

import os
from pathlib import Path


def dcmtk_tool(name: str) -> str | None:
    """The first ``name`` on PATH that is a program, not a script (DCMTK's, not pynetdicom's)."""
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        exe = Path(folder) / name
        if exe.is_file() and os.access(exe, os.X_OK):
            with exe.open("rb") as f:
                if f.read(2) != b"#!":
                    return str(exe)
    return None
