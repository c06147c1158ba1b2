"""Feedback on steps that take seconds to minutes: one line on stderr when a step starts, one when it ends.

Downloads, validation and prediction show tqdm bars; a step without a natural count (exporting a model to ONNX and
checking its parity, counting a search's candidates) says what it is doing instead, so a long silence never looks
like a hang. ``RAZORZOO_PROGRESS=0`` (or ``HF_HUB_DISABLE_PROGRESS_BARS=1``) turns both off.
"""
from __future__ import annotations

import contextlib
import sys
import time
from typing import Iterator

from razorzoo import constants
from razorzoo.bounded import terminal_safe

__all__ = ["step", "say"]


def say(message: str, *, show: bool | None = None) -> None:
    """``razorzoo: <message>`` on stderr (without the escape sequences a path in it may hold), unless progress output
    is off."""
    if constants.progress_bars() if show is None else show:
        print(f"razorzoo: {terminal_safe(message)}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def step(message: str, *, show: bool | None = None) -> Iterator[None]:
    """Say that ``message`` starts (``razorzoo: <message> ...``) and, when the block succeeds, how long it took."""
    show = constants.progress_bars() if show is None else show
    say(f"{message} ...", show=show)
    start = time.perf_counter()
    yield
    say(f"{message}: done in {time.perf_counter() - start:.1f} s", show=show)
