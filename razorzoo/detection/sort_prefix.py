"""The first ``k`` places of ``torch.sort(descending=True)`` on the CPU, exactly, without sorting everything.

mmdet's ``filter_scores_and_topk`` sorts every (box, class) score above the threshold and keeps the best ``nms_pre``:
at the evaluation threshold 0.001 that is two million scores for 30000 places, a sort that costs more than the
network. A selection (``topk``, ``numpy.partition``) finds the same scores, but not the same *order of equal
scores*: torch's CPU sort is ``std::sort`` (libstdc++'s introsort, not stable), and that order decides which of two
tied overlapping boxes NMS keeps. Bit parity with upstream needs that order.

:func:`sort_prefix` replays libstdc++'s introsort only where it touches the first ``k`` places: each partition step
(median-of-three pivot moved to the front, Hoare's unguarded partition) is done with vectorized numpy, whose swaps
are computable at once (the i-th element the left scan stops at trades places with the i-th the right scan stops
at); a range wholly beyond ``k`` is never sorted, a range wholly inside is handed to ``torch.sort`` itself, and
ranges of 16 or fewer get the final insertion sort (a stable sort). :func:`sort_prefix` checks itself against
``torch.sort`` once per process on tie-heavy data and falls back to ``torch.sort`` where they disagree (another
standard library, another torch).
"""
from __future__ import annotations

import functools

import numpy as np
import torch

__all__ = ["sort_prefix"]

_THRESHOLD = 16  # libstdc++'s _S_threshold: introsort leaves ranges this small to the final insertion sort


def sort_prefix(values: np.ndarray, k: int, payload: np.ndarray | None = None) -> np.ndarray:
    """``torch.from_numpy(values).sort(descending=True).indices[:k]`` for a 1-D float array, in O(n + k log k);
    with ``payload`` (an int64 array of ``len(values)``), ``payload`` at those indices. Both arrays are reordered in
    place (pass copies to keep them)."""
    n = len(values)
    k = min(k, n)
    payload = np.arange(n, dtype=np.int64) if payload is None else payload
    if n > _THRESHOLD and _replays_torch() and not np.isnan(values).any():
        try:
            return _introsort_prefix(values, payload, k)
        except _DepthLimit:  # introsort would switch to heapsort here: rare, and not replayed
            pass
    return payload[torch.from_numpy(values).sort(descending=True).indices[:k].numpy()]


class _DepthLimit(Exception):
    pass


def _introsort_prefix(v: np.ndarray, ix: np.ndarray, k: int) -> np.ndarray:
    """Rearranges ``v`` (and ``ix`` with it) as std::sort would, as far as the first ``k`` places need."""
    stack = [(0, len(v), 2 * (len(v).bit_length() - 1))]  # std::__lg(n) * 2
    while stack:
        first, last, depth = stack.pop()
        while last - first > _THRESHOLD and first < k:
            if last <= k:  # wholly inside the prefix: std::sort of the range, which is what torch.sort runs
                _apply(v, ix, first, last, torch.from_numpy(v[first:last]).sort(descending=True).indices.numpy())
                break
            if depth == 0:
                raise _DepthLimit
            depth -= 1
            cut = _partition(v, ix, first, last, k)
            stack.append((cut, last, depth))
            last = cut
        else:
            if first < k and last - first > 1:  # the final insertion sort: strict comparisons, so stable
                _apply(v, ix, first, last,
                       torch.from_numpy(v[first:last]).sort(descending=True, stable=True).indices.numpy())
    return ix[:k]


def _apply(v: np.ndarray, ix: np.ndarray, first: int, last: int, order: np.ndarray) -> None:
    v[first:last] = v[first:last][order]
    ix[first:last] = ix[first:last][order]


def _partition(v: np.ndarray, ix: np.ndarray, first: int, last: int, k: int) -> int:
    """``std::__unguarded_partition_pivot`` on ``[first, last)`` with the descending comparator ``a > b``; returns
    the cut. When the cut lies beyond ``k``, the values moved to its right are never read again and not written."""
    _median_to_first(v, ix, first, last)
    pivot = v[first]
    body = v[first + 1:last]
    left_stops = np.flatnonzero(body <= pivot) + (first + 1)  # the left scan stops where a > pivot fails
    right_stops = np.flatnonzero(body >= pivot)[::-1] + (first + 1)  # the right scan where pivot > a fails
    n = min(len(left_stops), len(right_stops))
    crossed = left_stops[:n] >= right_stops[:n]
    swaps = int(np.argmax(crossed)) if crossed.any() else n
    cut = left_stops[swaps] if swaps < len(left_stops) else last
    if swaps:
        cut = min(cut, right_stops[swaps - 1])
    left, right = left_stops[:swaps], right_stops[:swaps]
    moved_v, moved_ix = v[left], ix[left]
    v[left], ix[left] = v[right], ix[right]
    if cut <= k:
        v[right], ix[right] = moved_v, moved_ix
    return int(cut)


def _median_to_first(v: np.ndarray, ix: np.ndarray, first: int, last: int) -> None:
    """``std::__move_median_to_first(first, first + 1, mid, last - 1)`` with ``a > b`` as the comparator."""
    a, b, c = first + 1, first + (last - first) // 2, last - 1
    if v[a] > v[b]:
        median = b if v[b] > v[c] else c if v[a] > v[c] else a
    else:
        median = a if v[a] > v[c] else c if v[b] > v[c] else b
    v[first], v[median] = v[median], v[first]
    ix[first], ix[median] = ix[median], ix[first]


@functools.cache
def _replays_torch() -> bool:
    """Whether the replay equals ``torch.sort`` here (libstdc++'s introsort), on tie-heavy data of several sizes."""
    rng = np.random.default_rng(0)
    for n, levels in ((100, 3), (1000, 7), (5000, 50), (20000, 1000)):
        values = (rng.integers(0, levels, n) / levels).astype(np.float32)
        k = n // 3
        expected = torch.from_numpy(values).sort(descending=True).indices[:k].numpy()
        if not np.array_equal(_introsort_prefix(values, np.arange(n, dtype=np.int64), k), expected):
            return False
    return True
