"""Every environment variable razorzoo reads, with its default, in one place.

These are functions, not import-time constants: the environment is read at call time, so a process (or a test) can
change it without re-importing razorzoo. Nothing here imports torch or huggingface_hub.

=================================  ==================================================================================
variable                           meaning (default)
=================================  ==================================================================================
``RAZORZOO_CACHE``                 cache root, Hub files too (``$XDG_CACHE_HOME/razorzoo``, i.e. ``~/.cache/razorzoo``)
``RAZORZOO_MIRROR``                base URL that replaces ``https://download.openmmlab.com`` in card URLs (unset)
``RAZORZOO_CARDS``                 a directory of extra cards that extend/override ``cards/`` (unset)
``RAZORZOO_OFFLINE``               ``1``: use only the cache, never the network (``HF_HUB_OFFLINE`` works too)
``RAZORZOO_PROGRESS``              ``0``: no progress bars (``HF_HUB_DISABLE_PROGRESS_BARS=1`` works too)
``RAZORZOO_HTTP_TIMEOUT``          seconds to wait for a connection or for the next bytes of a download (``30``)
``RAZORZOO_STALL_TIMEOUT``        seconds in which a download must receive at least 1 KiB (response headers
                                   included), else it is cut and retried (``60``)
``RAZORZOO_MAX_DOWNLOAD_MB``       the most a download of unknown size may grow to, in MiB (``8192``)
``HF_ENDPOINT``                    the Hugging Face Hub (or a compatible server) for ``hf-hub:`` ids and ``push``
=================================  ==================================================================================

Limits that are not variables: :func:`max_threads` (thread counts), :data:`MAX_BATCH` (images per forward pass).
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

from razorzoo.bounded import InputError, check_number, safe_repr

__all__ = ["UPSTREAM_BASE_URL", "PROJECT_URL", "docs_url", "cache_dir", "mirror", "extra_cards_dir", "offline",
           "progress_bars", "http_timeout", "stall_timeout", "max_download_bytes", "hub_endpoint", "THREADS_PER_CPU",
           "MAX_BATCH", "max_threads", "check_threads", "environment"]

UPSTREAM_BASE_URL = "https://download.openmmlab.com"  # every upstream file in cards/ lives under it (docs/upstream.md §8)
PROJECT_URL = "https://github.com/razorzoo/razorzoo"  # setup.cfg's url and project_urls say the same


def docs_url(page: str) -> str:
    """Where a page of docs/ is read online: messages of an installed package cannot point into a checkout."""
    return f"{PROJECT_URL}/blob/main/docs/{page}"


THREADS_PER_CPU = 4  # thread counts (intra-op, image decoding) above this many per CPU core only slow things down
MAX_BATCH = 1024  # images per forward pass; a larger batch only exhausts memory

_YES = {"1", "ON", "YES", "TRUE"}
_NO = {"", "0", "OFF", "NO", "FALSE"}


def _flag(name: str, *, strict: bool = True) -> bool:
    """A yes/no variable. razorzoo's own are strict: a typo such as ``RAZORZOO_OFFLINE=ture`` must not silently mean
    "no". huggingface_hub's (``strict=False``) are read the way huggingface_hub reads them: anything else is "no".

    Raises:
        InputError: a strict variable holds something other than 1/0, true/false, yes/no, on/off (or nothing).
    """
    value = os.environ.get(name, "").strip().upper()
    if strict and value not in _YES | _NO:
        raise InputError(f"{name}={safe_repr(os.environ[name])} is not a yes/no value: set it to 1/0, true/false, "
                         "yes/no or on/off, or unset it")
    return value in _YES


def cache_dir() -> Path:
    """The cache root: ``RAZORZOO_CACHE``, else ``$XDG_CACHE_HOME/razorzoo``, else ``~/.cache/razorzoo``."""
    explicit = os.environ.get("RAZORZOO_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "razorzoo"


def mirror() -> str | None:
    """The base URL serving a copy of ``download.openmmlab.com`` (``RAZORZOO_MIRROR``), without a trailing ``/``.

    Raises:
        InputError: the value is not an ``http(s)://host[/path]`` URL (checked before any request is made).
    """
    value = os.environ.get("RAZORZOO_MIRROR", "").strip().rstrip("/")
    if not value:
        return None
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
        usable = value.isprintable() and parts.scheme in ("http", "https") and bool(parts.hostname) \
            and not parts.query and not parts.fragment
    except ValueError:  # a malformed IPv6 literal or port
        usable = False
    if not usable:
        raise InputError(f"RAZORZOO_MIRROR={safe_repr(value)} is not a URL: set it to the base URL of a copy of "
                         f"{UPSTREAM_BASE_URL}, e.g. https://mirror.example.org, or unset it")
    return value


def extra_cards_dir() -> str | None:
    """A directory of extra/overriding model cards (``RAZORZOO_CARDS``)."""
    return os.environ.get("RAZORZOO_CARDS") or None


def offline() -> bool:
    """Offline mode: ``RAZORZOO_OFFLINE`` or ``HF_HUB_OFFLINE`` is ``1``/``true``/``yes``/``on``.

    Raises:
        InputError: ``RAZORZOO_OFFLINE`` is not a yes/no value.
    """
    return _flag("RAZORZOO_OFFLINE") or _flag("HF_HUB_OFFLINE", strict=False)


def progress_bars() -> bool:
    """Whether downloads show tqdm bars: off with ``RAZORZOO_PROGRESS=0`` or ``HF_HUB_DISABLE_PROGRESS_BARS=1``.

    Raises:
        InputError: ``RAZORZOO_PROGRESS`` is not a yes/no value.
    """
    if os.environ.get("RAZORZOO_PROGRESS", "").strip() and not _flag("RAZORZOO_PROGRESS"):
        return False
    return not _flag("HF_HUB_DISABLE_PROGRESS_BARS", strict=False)


def http_timeout() -> float:
    """Seconds to wait for a connection or between two reads of a download (``RAZORZOO_HTTP_TIMEOUT``, 30).

    Raises:
        InputError: the value is not a finite number of seconds in (0, 86400].
    """
    return _seconds("RAZORZOO_HTTP_TIMEOUT", 30.0)


def _seconds(name: str, default: float) -> float:
    """A duration variable: ``default`` when unset, else a finite number of seconds in (0, 86400]."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    return float(check_number(value, f"{name} (seconds)", minimum=0, exclusive_minimum=True, maximum=86400))


def hub_endpoint() -> str | None:
    """``HF_ENDPOINT`` without a trailing ``/`` (None: huggingface_hub's default). huggingface_hub itself reads it
    only once, at import, so razorzoo passes it explicitly on every call."""
    return os.environ.get("HF_ENDPOINT", "").strip().rstrip("/") or None


def stall_timeout() -> float:
    """Seconds in which a download must receive at least 1 KiB, response headers included
    (``RAZORZOO_STALL_TIMEOUT``, 60): a server that trickles bytes is cut, like one that sends nothing.

    Raises:
        InputError: the value is not a finite number of seconds in (0, 86400].
    """
    return _seconds("RAZORZOO_STALL_TIMEOUT", 60.0)


def max_download_bytes() -> int:
    """The most a download whose size nobody states may grow to (``RAZORZOO_MAX_DOWNLOAD_MB``, 8192 MiB); a card's
    ``size``, the Hub's stated size or the response's ``Content-Length`` caps it exactly.

    Raises:
        InputError: the value is not a whole number of MiB in 1..2^24.
    """
    value = os.environ.get("RAZORZOO_MAX_DOWNLOAD_MB", "").strip()
    megabytes = 8192 if not value else int(check_number(value, "RAZORZOO_MAX_DOWNLOAD_MB", minimum=1,
                                                        maximum=1 << 24, integer=True))
    return megabytes << 20


def cpu_count() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def max_threads() -> int:
    """The most threads razorzoo accepts for one pool (``--threads``, ``--workers``): :data:`THREADS_PER_CPU` per
    core. (torch segfaults asked for 100000 intra-op threads.)"""
    return THREADS_PER_CPU * cpu_count()


def check_threads(value: object, what: str, *, minimum: int = 1) -> int:
    """``value`` as a thread count in ``minimum`` .. :func:`max_threads`, or :class:`InputError` naming ``what``."""
    return int(check_number(value, what, minimum=minimum, maximum=max_threads(), integer=True))


@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    """Set these environment variables for the ``with`` block, then give back the caller's values (or their
    absence): commands such as ``razorzoo demo`` may run inside a longer-lived process."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
