"""The one timing rule of the benchmark scripts: the median of ``runs`` calls after ``warmup`` unmeasured ones."""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable


def median(fn: Callable[[], Any], runs: int, warmup: int) -> tuple[float, Any]:
    """``(median seconds of a call of fn, its last result)``."""
    times, result = [], None
    for i in range(warmup + runs):
        start = time.perf_counter()
        result = fn()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times), result
