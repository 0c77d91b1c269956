"""Files written whole or not at all, and YAML read with one-line errors."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from hxsched.errors import HxschedError


def atomic_write(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o644) -> Path:
    """Write ``data`` to a temporary file beside ``path``, fsync it, rename it over ``path``
    and fsync the folder: readers see the old file or the new one, never half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # mkstemp makes 0600; readers may run as other users
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable (best effort: not every file system allows it)
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return path
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
    return path


def yaml_loader() -> type:
    """libyaml's safe loader where PyYAML was built with it (several times faster), else PyYAML's."""
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(path: str | os.PathLike[str], what: str = "file") -> Any:
    """Parsed YAML; a missing or unreadable file is an HxschedError naming it."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            return yaml.load(f, Loader=yaml_loader())
    except FileNotFoundError:
        raise HxschedError(f"{what} not found", path=path) from None
    except (OSError, yaml.YAMLError) as exc:
        raise HxschedError(
            f"not readable YAML: {' '.join(str(exc).split())[:200]}", path=path
        ) from None
