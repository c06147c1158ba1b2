"""Latency measured on this machine: a per-block lookup table (a *device profile*) and a predictor that sums it.

As in Once-for-All's latency tables, a network's latency is predicted as the sum of the latencies of its blocks,
each looked up by its *op signature*: the input size and everything that decides the block's work (channels,
kernel, stride, expand ratio through the widths, SE, activation, residual). Entries are measured here, on the chosen
backend and thread count, and stored in a JSON profile that can be reused and shared; a missing entry is measured
when first needed. Block sums miss the glue between blocks, so finalists of a search are always re-timed end to end
(:func:`time_model`); ``benchmarks/bench_latency_predictor.py`` prints the predictor's error.
"""
from __future__ import annotations

import contextlib
import copy
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch import nn

from razorzoo import __version__
from razorzoo import constants
from razorzoo.bounded import check_number, safe_repr, terminal_safe
from razorzoo.documents import Fields, read_json_file
from razorzoo.errors import RazorzooError
from razorzoo.files import write_json_atomic

__all__ = ["BACKENDS", "DeviceProfile", "block_signatures", "time_model", "machine_description", "threads_limit"]

PROFILE_FORMAT = "razorzoo-device-profile"
BACKENDS = ("torch",)  # eager PyTorch on the CPU; ONNX runtimes can be added as further timers
WARMUP = 3
MAX_REPEATS = 1000  # timings per entry; more only makes a search wait
MAX_PROFILE_THREADS = 1024
MAX_ENTRIES = 100_000  # a search meets a few hundred block signatures
MAX_ENTRY_MS = 60_000.0  # a block that takes a minute is not a latency to predict with


@contextlib.contextmanager
def threads_limit(n: int) -> Iterator[None]:
    """Run the block with ``n`` intra-op threads (1 .. :func:`razorzoo.constants.max_threads`), then restore
    torch's setting."""
    constants.check_threads(n, "threads")
    saved = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def _median_ms(module: nn.Module, x: torch.Tensor, repeats: int, threads: int) -> float:
    """Median wall time of ``module(x)`` in milliseconds, after a warm-up, with ``threads`` intra-op threads."""
    with threads_limit(threads), torch.inference_mode():
        for _ in range(WARMUP):
            module(x)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            module(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise RazorzooError(f"unknown latency backend {safe_repr(backend)}; available: {', '.join(BACKENDS)}")


def time_model(model: nn.Module, input_shape: Sequence[int], *, backend: str = "torch", threads: int = 1,
               repeats: int = 20) -> float:
    """End-to-end latency of ``model`` on one input of ``input_shape`` (``(N, C, H, W)``), median ms."""
    _check_backend(backend)
    x = torch.randn(tuple(input_shape), generator=torch.Generator().manual_seed(0))
    return _median_ms(model.eval(), x, repeats, threads)


def _leaf(module: nn.Module) -> str:
    if isinstance(module, nn.Conv2d):
        return (f"conv{module.in_channels}-{module.out_channels}k{module.kernel_size[0]}s{module.stride[0]}"
                f"g{module.groups}")
    if isinstance(module, nn.Linear):
        return f"fc{module.in_features}-{module.out_features}"
    if isinstance(module, nn.BatchNorm2d):
        return "bn"
    return type(module).__name__.lower()


def _describe(module: nn.Module) -> str:
    """What decides the unit's work: its leaf ops in order (convs with widths, kernel, stride, groups; norms;
    activations; pools) and, for inverted-residual blocks, the residual kind."""
    leaves = [_leaf(m) for m in module.modules() if not list(m.children())]
    residual = getattr(module, "residual", None)
    return ",".join(leaves + ([f"res-{residual}"] if residual else []))


def _units(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The timed units of a MobileNet classifier in forward order: stem, every block, last conv, pool + fc."""
    backbone = getattr(model, "backbone", None)
    if backbone is None or not hasattr(backbone, "last_conv"):
        raise RazorzooError("latency tables cover AttentiveNAS/OFA classifiers (razorzoo.build_classifier of an "
                            f"attentive or ofa subnet), not {type(model).__name__}")
    units = [("first_conv", backbone.first_conv)]
    for name, stage in backbone.named_children():
        if name.startswith("layer"):
            units += [("block", block) for block in stage]
    units += [("last_conv", backbone.last_conv), ("head", nn.Sequential(model.neck, model.head))]
    return units


def block_signatures(model: nn.Module, input_shape: Sequence[int]) -> list[tuple[str, nn.Module, tuple[int, ...]]]:
    """``(signature, unit, unit input shape)`` for every unit of ``model`` at ``input_shape`` (shapes traced on the
    meta device: nothing is computed)."""
    shape = tuple(int(s) for s in input_shape)
    units = _units(model)
    ghost = copy.deepcopy(model).to("meta").eval()
    ghost_units = _units(ghost)
    shapes: dict[int, tuple[int, ...]] = {}

    def record(i: int):
        def hook(module: nn.Module, inputs: tuple) -> None:
            shapes.setdefault(i, tuple(inputs[0].shape))

        return hook

    hooks = [unit.register_forward_pre_hook(record(i)) for i, (_, unit) in enumerate(ghost_units)]
    head = ghost_units[-1][1]
    with torch.no_grad():
        features = ghost.backbone(ghost.resize_input(torch.zeros(shape, device="meta")))[-1]
        head(features)
    for hook in hooks:
        hook.remove()
    out = []
    for i, (kind, unit) in enumerate(units):
        n, *rest = shapes[i]
        out.append((f"{kind}:{'x'.join(map(str, rest))}:{_describe(unit)}", unit, shapes[i]))
    return out


def machine_description() -> dict[str, str]:
    """What the profile was measured on (recorded, not checked: profiles are shared on purpose)."""
    return {"machine": platform.machine(), "processor": platform.processor() or _cpu_model(),
            "system": platform.system(), "python": platform.python_version(), "torch": torch.__version__,
            "razorzoo": __version__}


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return ""


@dataclass
class DeviceProfile:
    """A latency lookup table: signature -> median ms, for one backend, thread count and batch size 1."""

    backend: str = "torch"
    threads: int = 1
    repeats: int = 20
    entries: dict[str, float] = field(default_factory=dict)
    machine: dict[str, str] = field(default_factory=machine_description)

    def __post_init__(self) -> None:
        _check_backend(self.backend)
        check_number(self.repeats, "repeats", minimum=1, maximum=MAX_REPEATS, integer=True)

    def predict(self, model: nn.Module, input_shape: Sequence[int], *, measure: bool = True) -> float:
        """Predicted latency (ms) of ``model``: the sum of its units' entries; missing ones are measured first
        (``measure=False`` raises instead). A classifier's own input resize (``input_shape`` in its YAML) is not a
        unit: its blocks are looked up at the resized size, the resize itself is not counted."""
        total = 0.0
        for signature, unit, shape in block_signatures(model, input_shape):
            if signature not in self.entries:
                if not measure:
                    raise RazorzooError(f"the device profile has no entry for {safe_repr(signature)}; measure it "
                                        "on this machine (measure=True)")
                x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
                self.entries[signature] = _median_ms(unit.eval(), x, self.repeats, self.threads)
            total += self.entries[signature]
        return total

    def to_dict(self) -> dict:
        return {"format": PROFILE_FORMAT, "version": 1, "backend": self.backend, "threads": self.threads,
                "batch_size": 1, "repeats": self.repeats, "unit": "ms", "machine": self.machine,
                "entries": dict(sorted(self.entries.items()))}

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "DeviceProfile":
        """Read a profile written by :meth:`save` (or shared by someone else: every field is checked and bounded).

        Raises:
            RazorzooError: the file is not a razorzoo device profile, or a field is outside its range.
        """
        where = f"device profile {safe_repr(str(path))}"
        data = Fields(read_json_file(path, what=where, error=RazorzooError), where, error=RazorzooError)
        if data.value.get("format") != PROFILE_FORMAT:
            raise RazorzooError(f"{where} is not a razorzoo device profile (no \"format\": \"{PROFILE_FORMAT}\")")
        data.int("version", minimum=1, maximum=1)
        return cls(backend=data.text("backend", choices=BACKENDS),
                   threads=data.int("threads", minimum=1, maximum=MAX_PROFILE_THREADS),
                   repeats=data.int("repeats", minimum=1, maximum=MAX_REPEATS),
                   entries=data.mapping("entries", max_items=MAX_ENTRIES, value=lambda v, at: data.finite(
                       v, at, minimum=0, maximum=MAX_ENTRY_MS)),
                   machine=data.mapping("machine", max_items=32, value=lambda v, at: _machine_text(v, at, where),
                                        default={}))


def _machine_text(value: object, at: str, where: str) -> str:
    if not isinstance(value, str) or len(value) > 256:
        raise RazorzooError(f"{where}: {at} must be a string of at most 256 characters, not {safe_repr(value)}")
    return terminal_safe(value)
