"""Read OpenMMLab checkpoints without mmengine and without running their pickles (docs/upstream.md §4, §7.15, §7.16).

A Runner checkpoint pickles far more than weights: ``meta`` (config text, dataset classes), ``message_hub`` (mmengine
``HistoryBuffer`` objects holding numpy arrays), optimizer and scheduler state. ``torch.load(weights_only=True)``
rejects such files and ``weights_only=False`` would run whatever the pickle asks for. :func:`read_checkpoint` goes
through ``torch.load`` (both the zip and the legacy format) with an allow-list unpickler: globals on the list are the
few pure functions that rebuild tensors; every other global becomes an inert :class:`Placeholder` that records how
the pickle used it and never imports or calls anything. Placeholders inside the parts razorzoo discards are fine;
one inside a part it needs (``state_dict``) is an :class:`~razorzoo.errors.UnsafeCheckpointError`.
"""
from __future__ import annotations

import _compat_pickle
import pickle
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch

from razorzoo.errors import CheckpointError, UnsafeCheckpointError
from razorzoo.wording import count

__all__ = ["Checkpoint", "read_checkpoint", "LAYOUTS", "ALLOWED_GLOBALS"]

LAYOUTS = (
    "runner",  # mmengine CheckpointHook: meta, state_dict, message_hub, optimizer, param_schedulers[, ema_state_dict]
    "mmdet-publish",  # mmdet publish_model.py: meta, state_dict (legacy format)
    "mmrazor-publish",  # mmrazor publish_model.py: meta, state_dict, ema_state_dict (legacy format)
    "mmyolo-publish",  # mmyolo publish_model.py: meta, state_dict, param_schedulers (legacy format)
    "mmrazor-subnet",  # convert_supernet2subnet.py: {"state_dict": {"architecture." + k: ...}, "meta": {}}
    "state-dict",  # a bare state dict, or {"state_dict": ...} with nothing else recognisable
    "safetensors",  # a .safetensors file
)

# parts of an OpenMMLab checkpoint razorzoo reads; unknown globals anywhere else are harmless placeholders
_NEEDED = ("state_dict", "ema_state_dict")


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for ``bytes`` (numpy array data); nothing else."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode({type(text).__name__}, {encoding!r}) is not allowed")
    return text.encode("latin1")


# The reviewed allow-list: the only callables a pickle may reach, pure functions that rebuild tensors and containers
# from the file's own data. Storage types (``torch.FloatStorage`` ...) never get here: torch's unpickler wrapper
# resolves them before ``find_class``. tests/test_unpickler_gadgets.py lists this set exactly and throws gadget
# pickles at it: widen it only with a review and a gadget test for what the new global can be made to do.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("_codecs", "encode"): _latin1_encode,
}
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(_ALLOWED)


class Placeholder:
    """Inert stand-in for an object built from a global outside the allow-list.

    Supports exactly what the unpickler does with objects (``NEWOBJ``/``REDUCE`` construction, calling, ``BUILD``
    state, appends and set-items) by recording the arguments; it executes nothing.
    """

    global_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> "Placeholder":
        self = object.__new__(cls)
        self.args, self.state, self.items = args, None, []
        return self

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> "Placeholder":
        return type(self)(*args)

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items.append((key, value))

    def append(self, value: Any) -> None:
        self.items.append(value)

    def extend(self, values: Any) -> None:
        self.items.extend(values)

    def __repr__(self) -> str:
        return f"<placeholder for {self.global_name}>"


def _placeholder_type(module: str, name: str) -> type[Placeholder]:
    # NEWOBJ needs a class, so each unknown global gets its own Placeholder subclass (its repr names the global)
    return type("Placeholder", (Placeholder,), {"global_name": f"{module}.{name}", "__module__": __name__})


class _AllowListUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose only way to reach Python objects, ``find_class``, consults the allow-list.

    Every opcode that names a global (GLOBAL, STACK_GLOBAL, INST, OBJ, EXT*) goes through ``find_class``, so a
    payload such as ``os.system`` resolves to a placeholder class and calling it only records the arguments.
    """

    def find_class(self, module: str, name: str) -> Any:
        # protocol-2 pickles (all torch.save files) use Python 2 names (``__builtin__``, ``commands``); translate
        # them as pickle's own ``fix_imports`` does, so messages name what would have run
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        allowed = _ALLOWED.get((module, name))
        return allowed if allowed is not None else _placeholder_type(module, name)


class _AllowListPickleModule:
    """The ``pickle_module`` torch.load uses for both formats (the legacy one also calls ``load`` directly)."""

    __name__ = "razorzoo.weights.checkpoint.allow_list_pickle"
    Unpickler = _AllowListUnpickler

    @staticmethod
    def load(file: Any, **kwargs: Any) -> Any:
        return _AllowListUnpickler(file, **kwargs).load()


@dataclass
class Checkpoint:
    """The inference weights of a checkpoint and what razorzoo learned reading it.

    ``state_dict`` holds ``checkpoint["state_dict"]``, which for EMA-trained detectors already holds the EMA weights
    (docs/upstream.md §4, §7.15), with the ``architecture.`` / ``module.`` prefixes stripped (``normalization`` says which).
    ``meta`` keeps only plain data from the file's ``meta`` (``classes``, ``config`` text, epoch…).
    ``ema_state_dict`` (the raw training weights, despite its name) is read only when asked for.
    """

    state_dict: "OrderedDict[str, torch.Tensor]"
    layout: str
    meta: dict[str, Any] = field(default_factory=dict)
    normalization: tuple[str, ...] = ()
    path: Path | None = None
    ema_state_dict: "OrderedDict[str, torch.Tensor] | None" = None


def read_checkpoint(path: str | Path, *, ema: bool = False) -> Checkpoint:
    """Read a ``.pth`` (zip or legacy torch format, any OpenMMLab layout) or ``.safetensors`` file safely.

    Args:
        path: the checkpoint file.
        ema: also return ``ema_state_dict`` (raw training weights, ``module.``/``steps`` removed) when present.

    Raises:
        UnsafeCheckpointError: a needed part references a global outside the allow-list (nothing was executed).
        CheckpointError: the file is not a checkpoint, or holds no state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    legacy = not zipfile.is_zipfile(path)
    obj = _unpickle(path)
    layout = _detect_layout(obj, legacy)
    for part in _NEEDED if ema else _NEEDED[:1]:
        if isinstance(obj, Mapping) and part in obj:
            _refuse_placeholders(obj[part], part)
    raw = obj.get("state_dict", obj) if isinstance(obj, Mapping) else obj
    if layout == "state-dict":
        _refuse_placeholders(raw, "the checkpoint")
    state_dict, normalization = _normalize(_tensors_only(raw, "state_dict"))
    if layout == "runner" and state_dict and all(k.startswith("architecture.") for k in raw):
        layout = "mmrazor-subnet"  # a Runner file of an MMRazor algorithm: same keys as the published subnets
    ema_sd = None
    if ema and isinstance(obj, Mapping) and isinstance(obj.get("ema_state_dict"), Mapping):
        ema_raw = OrderedDict((k, v) for k, v in obj["ema_state_dict"].items() if k != "steps")
        ema_sd, _ = _normalize(_tensors_only(ema_raw, "ema_state_dict"))
    meta = _plain_meta(obj.get("meta")) if isinstance(obj, Mapping) else {}
    del obj, raw  # release the optimizer, message hub and the pickle's containers before the caller goes on
    return Checkpoint(state_dict, layout, meta, normalization, path, ema_sd)


def _unpickle(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", pickle_module=_AllowListPickleModule, weights_only=False)
    except UnsafeCheckpointError:
        raise
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, AttributeError,
            zipfile.BadZipFile, IndexError, KeyError) as exc:
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint ({type(exc).__name__}: {exc}); re-download it or check "
            "that it is a .pth/.safetensors file"
        ) from exc


def _detect_layout(obj: Any, legacy: bool) -> str:
    if not isinstance(obj, Mapping) or "state_dict" not in obj:
        return "state-dict"
    keys = set(obj)
    if keys & {"message_hub", "optimizer"}:
        return "runner"
    sd = obj["state_dict"]
    if isinstance(sd, Mapping) and sd and all(str(k).startswith("architecture.") for k in sd):
        return "mmrazor-subnet"
    if legacy and "ema_state_dict" in keys:
        return "mmrazor-publish"
    if legacy and "param_schedulers" in keys:
        return "mmyolo-publish"
    if legacy and keys == {"meta", "state_dict"}:
        return "mmdet-publish"
    return "state-dict"


def _walk(obj: Any, where: str, seen: set[int]) -> Iterator[tuple[str, Placeholder | type]]:
    """Yield ``(location, placeholder)`` for every placeholder reachable from ``obj``."""
    if id(obj) in seen or isinstance(obj, (torch.Tensor, str, bytes, int, float, bool, type(None))):
        return
    seen.add(id(obj))
    if isinstance(obj, Placeholder) or (isinstance(obj, type) and issubclass(obj, Placeholder)):
        yield where, obj
        return
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            yield from _walk(key, where, seen)
            yield from _walk(value, f"{where}[{key!r}]", seen)
        yield from _walk(getattr(obj, "__dict__", None), f"{where}.__dict__", seen)  # e.g. OrderedDict._metadata
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for i, value in enumerate(obj):
            yield from _walk(value, f"{where}[{i}]", seen)


def _refuse_placeholders(part: Any, name: str) -> None:
    for where, found in _walk(part, name, set()):
        raise UnsafeCheckpointError(
            f"{where} references {found.global_name}, which is not on razorzoo's allow-list of pickle globals; "
            "it was not imported or run. Only tensors may appear in a state dict: re-export the weights (e.g. "
            "torch.save(model.state_dict())) or convert them to safetensors with a trusted tool"
        )


def _tensors_only(state_dict: Any, part: str) -> "OrderedDict[str, torch.Tensor]":
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(f"the checkpoint's {part} is a {type(state_dict).__name__}, not a mapping of tensors")
    for key, value in state_dict.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{part}[{key!r}] is a {type(value).__name__}, not a tensor")
    return OrderedDict(state_dict)


def _normalize(state_dict: "OrderedDict[str, torch.Tensor]") -> tuple["OrderedDict[str, torch.Tensor]", tuple[str, ...]]:
    """Strip the prefixes upstream loaders strip: ``module.`` (DataParallel, EMA copies) and ``architecture.``.

    MMRazor classifier files root every model key at the algorithm's ``architecture`` child (docs/upstream.md §3); the upstream
    ``Pretrained(prefix="architecture.")`` keeps only those keys, so other keys are dropped here too, and said so.
    """
    notes: list[str] = []
    for prefix in ("module.", "architecture."):
        inside = [k for k in state_dict if k.startswith(prefix)]
        if not inside:
            continue
        outside = [k for k in state_dict if not k.startswith(prefix)]
        if outside and prefix == "module.":
            continue  # only a wrapper prefix when every key has it
        state_dict = OrderedDict((k[len(prefix):], state_dict[k]) for k in inside)
        note = f"stripped the {prefix!r} prefix from {count(len(inside), 'key')}"
        if outside:
            note += f" and dropped {count(len(outside), 'key')} outside it (e.g. {outside[0]!r})"
        notes.append(note)
    return state_dict, tuple(notes)


def _plain_meta(meta: Any) -> dict[str, Any]:
    """The safe, useful part of ``meta``: plain scalars and strings, the config text, the class names."""
    if not isinstance(meta, Mapping):
        return {}
    out: dict[str, Any] = {}
    for key in ("epoch", "iter", "seed", "experiment_name", "time", "mmengine_version"):
        if isinstance(meta.get(key), (str, int, float)) and not isinstance(meta.get(key), bool):
            out[key] = meta[key]
    if isinstance(meta.get("cfg"), str):
        out["config"] = meta["cfg"]
    dataset_meta = meta.get("dataset_meta")
    classes = dataset_meta.get("classes") if isinstance(dataset_meta, Mapping) else meta.get("CLASSES")
    if isinstance(classes, (list, tuple)) and all(isinstance(c, str) for c in classes):
        out["classes"] = list(classes)
    return out


def _read_safetensors(path: Path) -> Checkpoint:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as st:
            meta = dict(st.metadata() or {})
            state_dict = OrderedDict((k, st.get_tensor(k)) for k in st.keys())
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc})") from exc
    _restore_aliases(state_dict, meta.get("razorzoo_tied"), path)
    state_dict, normalization = _normalize(state_dict)
    return Checkpoint(state_dict, "safetensors", meta, normalization, path)


def _restore_aliases(state_dict: "OrderedDict[str, torch.Tensor]", tied: str | None, path: Path) -> None:
    """A razorzoo file stores each tied group once (its first name); give every alias its tensor again, so the
    checkpoint has the model's full key set like any other (``razorzoo_tied``: a JSON list of name groups)."""
    if not tied:
        return
    from razorzoo.bounded import InputError, load_json

    try:
        groups = load_json(tied, what=f"{path} metadata razorzoo_tied")
    except InputError as exc:
        raise CheckpointError(str(exc)) from None
    if not isinstance(groups, list) or not all(
            isinstance(group, list) and group and all(isinstance(name, str) for name in group) for group in groups):
        raise CheckpointError(f"{path}: metadata razorzoo_tied is not a list of name groups")
    for first, *aliases in groups:
        if first in state_dict:
            for alias in aliases:
                state_dict.setdefault(alias, state_dict[first])
