"""Random generators for the training-transform tests: draws forced to values, and upstream's own draws.

``Draws`` returns the values of a script and checks that every call has the name and the arguments the script
says, read off the upstream source (``np.random.uniform(low, high[, size])`` is ``uniform``, ``randint`` is
``integers``, ``random_sample``/``choice(p=...)`` are ``random``, ``beta`` is ``beta``). So a test both forces the
randomness and pins the sequence of draws, which is what makes a seeded run equal to upstream's.

``UpstreamDraws(seed)`` is numpy's legacy ``RandomState`` (what ``np.random.seed(seed)`` makes the global state)
under those names: with it, razorzoo's transforms draw exactly what MMYOLO's drew in the recorded goldens.
"""
from __future__ import annotations

from typing import Any

import numpy as np


class Draws:
    """A scripted ``razorzoo.training.transforms.Random``: ``Draws(("uniform", (0, 1), 0.3), ...)``."""

    def __init__(self, *script: tuple[str, tuple, Any]) -> None:
        self.script = list(script)

    def _next(self, name: str, args: tuple) -> Any:
        assert self.script, f"unexpected draw {name}{args}: the script is finished"
        expected_name, expected_args, value = self.script.pop(0)
        assert (name, tuple(args)) == (expected_name, tuple(expected_args)), \
            f"draw {name}{args}, the script expected {expected_name}{expected_args}"
        return value

    def uniform(self, low: float = 0.0, high: float = 1.0, size: Any = None) -> Any:
        return self._next("uniform", (low, high) if size is None else (low, high, size))

    def integers(self, low: int, high: int, size: Any = None) -> Any:
        return self._next("integers", (low, high) if size is None else (low, high, size))

    def random(self) -> float:
        return self._next("random", ())

    def beta(self, a: float, b: float) -> float:
        return self._next("beta", (a, b))

    def done(self) -> bool:
        return not self.script


class UpstreamDraws:
    """``np.random.seed(seed)``'s stream, drawn under the names the transforms use."""

    def __init__(self, seed: int) -> None:
        self.state = np.random.RandomState(seed)

    def uniform(self, low: float = 0.0, high: float = 1.0, size: Any = None) -> Any:
        return self.state.uniform(low, high, size)

    def integers(self, low: int, high: int, size: Any = None) -> Any:
        return self.state.randint(low, high, size)

    def random(self) -> float:
        return self.state.random_sample()

    def beta(self, a: float, b: float) -> float:
        return self.state.beta(a, b)
