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
import stat
import tempfile
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

from razorzoo.bounded import InputError, load_json, safe_repr
from razorzoo.errors import OutputError, RazorzooError
from razorzoo.version import __version__

__all__ = ["UnsafePathError", "safe_join", "confined", "atomic_write", "write_bytes_atomic", "write_json_atomic",
           "read_json", "default_mode", "check_output_file", "check_planned_outputs", "check_output_dir", "check_run_dir",
           "mark_run_dir",
           "RUN_MARKER"]

RUN_MARKER = ".razorzoo-run.json"  # written into an `-o DIR` a command owns: a later run may write there again


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


def confined(root: str | os.PathLike, name: str, *, allow_outside: bool = False, what: str = "file",
             error: type[Exception] = UnsafePathError) -> Path:
    """``root / name`` for a path named by a document (a COCO ``file_name``, a line of a list file), refused with
    ``error`` when it leads outside ``root`` (``../``, absolute, a symlink out) unless ``allow_outside``.

    The refusal says only that the path is outside: nothing about what is there, so a hostile list cannot use
    razorzoo's errors to learn which files exist or what they are.
    """
    if not isinstance(name, str) or not name or "\x00" in name:
        raise error(f"{what} {safe_repr(name)} is not a usable path")
    path = Path(root) / name
    if allow_outside:
        return path
    try:
        resolved, resolved_root = path.resolve(), Path(root).resolve()
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a name too long
        raise error(f"{what} {safe_repr(name)} is not a usable path") from None
    if resolved_root not in resolved.parents:
        raise error(f"{what} {safe_repr(name)} is outside {safe_repr(str(root))}; razorzoo reads only files inside "
                    "it, unless you pass --allow-outside (allow_outside=True)")
    return path


def is_file(path: Path) -> bool:
    """Whether ``path`` is a file; ``False`` for one the system cannot look up (longer than PATH_MAX: a listed name
    joined to its folder), which callers then report as missing instead of raising ``OSError``."""
    try:
        return path.is_file()
    except OSError:  # ENAMETOOLONG
        return False


def _quote(path: Any) -> str:
    """A path in an error message: long enough to tell which file (both the folder and the name)."""
    return safe_repr(str(path), 200)


def _stat(path: Path, what: str) -> os.stat_result | None:
    """``os.stat(path)``, None when nothing is there; any other failure (a path under a file, a loop) is one line."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise OutputError(f"{what} {_quote(path)} cannot be used: {reason}") from None


def _check_parent(path: Path, what: str) -> None:
    """The nearest existing folder above ``path`` must be a writable directory (``path`` is created under it)."""
    parent = path.absolute().parent
    while True:
        info = _stat(parent, what)
        if info is not None:
            break
        parent = parent.parent
    if not stat.S_ISDIR(info.st_mode):
        raise OutputError(f"{what} {_quote(path)} cannot be created: {_quote(parent)} is a file, "
                          "not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {_quote(path)} cannot be written: the folder {_quote(parent)} is "
                          "not writable")


def _identities(paths: Iterable[Any]) -> dict[tuple[int, int], str]:
    """(device, inode) -> path of each of ``paths`` that exists (an output equal to one of them replaces it)."""
    found = {}
    for path in paths:
        try:
            info = os.stat(path)
        except (OSError, ValueError, TypeError):
            continue
        found.setdefault((info.st_dev, info.st_ino), os.fspath(path))
    return found


def check_output_file(path: str | os.PathLike, *, what: str, inputs: Iterable[Any] = (),
                      input_what: str = "the input") -> Path:
    """``path`` as a file razorzoo may write, checked before any work starts (an hour of inference must not end in
    a refused write): not empty, not a directory, fifo, device or socket, not one of ``inputs`` (the same file, by
    device and inode, whatever the spelling or link), under a folder that exists (or can be created) and is writable.

    Raises:
        OutputError: one line naming ``what`` (``"--save-json"``) and the problem.
    """
    text = os.fspath(path)
    if not text:
        raise OutputError(f"{what} is empty; give a file path")
    check_planned_outputs([Path(text)], what=what, inputs=inputs, input_what=input_what)
    _check_parent(Path(text), what)
    return Path(text)


def check_planned_outputs(paths: Iterable[Path], *, what: str, inputs: Iterable[Any] = (),
                          input_what: str = "the input") -> None:
    """Each of ``paths`` (files a run will write) is nothing yet or a regular file that is none of ``inputs``."""
    taken = None
    for path in paths:
        info = _stat(path, what)
        if info is None:
            continue
        text = _quote(path)
        if stat.S_ISDIR(info.st_mode):
            raise OutputError(f"{what} {text} is a directory; give a file path")
        if not stat.S_ISREG(info.st_mode):
            raise OutputError(f"{what} {text} exists and is not a regular file (a fifo, a device or a socket); "
                              "give another path")
        taken = _identities(inputs) if taken is None else taken
        source = taken.get((info.st_dev, info.st_ino))
        if source is not None:
            raise OutputError(f"{what} {text} is {input_what} {_quote(source)}; writing it would destroy "
                              "that file, give another path")


def check_output_dir(path: str | os.PathLike, *, what: str, inputs: Iterable[Any] = ()) -> Path:
    """``path`` as a folder razorzoo may write files into: a directory or nothing yet, writable (or creatable), and
    not one of the folders ``inputs`` are read from.

    Raises:
        OutputError: one line naming ``what`` and the problem.
    """
    text = os.fspath(path)
    if not text:
        raise OutputError(f"{what} is empty; give a folder")
    path = Path(text)
    info = _stat(path, what)
    if info is None:
        _check_parent(path, what)
        return path
    if not stat.S_ISDIR(info.st_mode):
        raise OutputError(f"{what} {_quote(text)} exists and is not a folder; give a folder (it is created if "
                          "missing)")
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {_quote(text)} is not writable")
    source = _identities(inputs).get((info.st_dev, info.st_ino))
    if source is not None:
        raise OutputError(f"{what} {_quote(text)} is the input folder {_quote(source)}; what is written there "
                          "would replace or mix with the inputs, give another folder")
    return path


def check_run_dir(path: str | os.PathLike, *, command: str, force: bool = False, what: str = "-o",
                  inputs: Iterable[Any] = ()) -> Path:
    """``-o DIR`` of a command that writes several files (``specialize``, ``train``): as :func:`check_output_dir`,
    and a folder that holds files must be this command's own earlier output (it has :data:`RUN_MARKER`), unless
    ``force``: a user's ``README.md`` or ``subnet.yaml`` is never overwritten by accident.

    Raises:
        OutputError: one line saying what is in the way and what to do.
    """
    path = check_output_dir(path, what=what, inputs=inputs)
    try:
        occupied = path.is_dir() and any(os.scandir(path))
    except OSError as exc:
        raise OutputError(f"{what} {_quote(path)} cannot be listed: {exc.strerror}") from None
    if occupied and not force:
        marker = read_json(path / RUN_MARKER)
        if not (isinstance(marker, dict) and marker.get("command") == command):
            raise OutputError(f"{what} {_quote(path)} holds files that `razorzoo {command}` did not write; "
                              "give a new or empty folder, or pass --force to write into it (files of the same "
                              "name are replaced)")
    return path


def mark_run_dir(path: str | os.PathLike, command: str) -> None:
    """Record in ``path`` that ``command`` writes there (:func:`check_run_dir` then lets its next run in)."""
    write_json_atomic(Path(path) / RUN_MARKER, {"command": command, "razorzoo_version": __version__})


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
