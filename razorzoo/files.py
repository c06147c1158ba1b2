"""Files razorzoo writes: one path joiner that refuses to leave its root, one atomic writer with proper modes.

Every file razorzoo creates (downloads, converted models, ``index.json``/``meta.json``, annotated images, exports)
goes through :func:`atomic_write`: a temporary file beside the target, ``fsync``, then ``os.replace``, so a crash,
Ctrl-C or a full disk never leaves half a file under the real name. ``tempfile.mkstemp`` creates files 0600; the
writer gives the final file the mode a plain ``open()`` would (``0666 & ~umask``), so a cache shared by a group or
mounted into a container stays readable. Every name that comes from outside (a revision, an ETag, an index entry,
a card's ``subnet.file``) is joined with :func:`safe_join`, which refuses anything that would leave the root.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

from razorzoo.bounded import InputError, load_json, safe_repr
from razorzoo.errors import RazorzooError

__all__ = ["UnsafePathError", "safe_join", "atomic_write", "write_bytes_atomic", "write_json_atomic", "read_json",
           "default_mode"]


class UnsafePathError(RazorzooError):
    """A name that would become a path outside the directory it belongs to (``../``, absolute, NUL, ...)."""


def safe_join(root: str | os.PathLike, *parts: str, what: str = "name") -> Path:
    """``root / parts...``, refused unless every part is a plain relative name that stays under ``root``.

    ``parts`` may contain ``/`` separated segments (``"subnets/A6.yaml"``); empty, ``.``, ``..``, absolute and
    drive-qualified segments, backslashes and control characters are refused, and the resolved result (symlinks
    followed) must still lie under the resolved ``root``.
    """
    root = Path(root)
    for part in parts:
        if not isinstance(part, str) or not part:
            raise UnsafePathError(f"{what} {safe_repr(part)} is not a usable file name")
        if "\\" in part or any(ord(c) < 32 or ord(c) == 127 for c in part) or part.startswith("/"):
            raise UnsafePathError(f"{what} {safe_repr(part)} is not a plain relative file name")
        for segment in part.split("/"):
            if segment in ("", ".", "..") or (len(segment) >= 2 and segment[1] == ":"):
                raise UnsafePathError(f"{what} {safe_repr(part)} would leave {safe_repr(str(root))}; "
                                      "only plain relative names are allowed")
    path = root.joinpath(*parts)
    resolved_root = root.resolve()
    resolved = path.resolve()
    if resolved != resolved_root and resolved_root not in resolved.parents:
        raise UnsafePathError(f"{what} {safe_repr('/'.join(parts))} resolves outside {safe_repr(str(root))}")
    return path


def default_mode() -> int:
    """The mode ``open()`` gives a new file under the current umask (``0o644`` under the usual ``022``)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, *, binary: bool = True, mode: int | None = None) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success fsync, chmod and rename it to ``path``, else delete it.

    ``mode`` defaults to :func:`default_mode`. The parent directory must exist (callers create it on purpose).
    """
    path = Path(path)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temp, default_mode() if mode is None else mode)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically, with the umask's mode."""
    with atomic_write(path) as f:
        f.write(data)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented, key-sorted JSON to ``path`` atomically, with the umask's mode."""
    return write_bytes_atomic(path, json.dumps(data, indent=1, sort_keys=True).encode())


def read_json(path: str | os.PathLike) -> Any:
    """A JSON record razorzoo keeps (``index.json``, ``meta.json``, ``refs.json``), or ``None`` when it is missing,
    unreadable or not JSON: a broken or planted record is treated as absent, never trusted and never fatal."""
    try:
        return load_json(Path(path).read_bytes(), what=str(path))
    except (OSError, InputError):
        return None
