"""Checkpoint + subnet -> one standalone ``model.safetensors`` that alone rebuilds the model, and back.

The file holds the inference weights under razorzoo's model keys, in model order, tied aliases stored once, and
metadata (all strings): ``format``, ``razorzoo_version``, ``razorzoo_arch`` (JSON of ``ArchSpec.to_dict()``),
``razorzoo_name``, ``razorzoo_subnet_yaml``, ``razorzoo_tied`` (JSON list of alias groups), ``source_url``,
``source_sha256``. The safetensors container is written here, streamed tensor by tensor, because
``safetensors.torch.save_file`` first copies every tensor into a ``bytes`` object (2x the checkpoint in memory);
the bytes are the format's (8-byte header length, JSON header, raw little-endian data) and read back by safetensors.
"""
from __future__ import annotations

import json
import struct
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from razorzoo.version import __version__
from razorzoo.files import atomic_write, check_output_file
from razorzoo.arch.spec import ArchSpec
from razorzoo.bounded import InputError, load_json, safe_repr
from razorzoo.errors import CheckpointError, OutputError, PairMismatchError, RazorzooError
from razorzoo.weights.keys import ModelKeys, model_keys, model_view

if TYPE_CHECKING:
    import torch
    from torch import nn

    from razorzoo.weights.checkpoint import Checkpoint

__all__ = ["convert_checkpoint", "read_converted", "read_spec", "load_weights", "as_task", "METADATA_KEYS"]

METADATA_KEYS = ("format", "razorzoo_version", "razorzoo_arch", "razorzoo_name", "razorzoo_subnet_yaml",
                 "razorzoo_tied", "source_url", "source_sha256")
EMA_PREFIX = "ema_state_dict."  # raw training weights, stored only with keep_ema=True (docs/upstream.md §4: upstream's name)

_DTYPES = {"float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64", "int32": "I32",
           "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL"}


def convert_checkpoint(
    checkpoint: "str | Path | Checkpoint",
    spec: ArchSpec,
    output: str | Path,
    *,
    name: str = "",
    source_url: str = "",
    source_sha256: str = "",
    keep_ema: bool = False,
    subnet_yaml: str | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Verify ``checkpoint`` against ``spec`` and write ``output`` (a razorzoo ``.safetensors`` file) atomically.

    Writes exactly the aligned state dict :func:`~razorzoo.weights.verify.verify_pair` returns (a supernet checkpoint
    is sliced to the spec's subnet there, once). The output bytes depend only on the inputs.

    Args:
        checkpoint: a checkpoint path or a :class:`~razorzoo.weights.checkpoint.Checkpoint`.
        spec: the architecture the weights belong to.
        output: where to write; written to a temporary file in the same directory, then renamed.
        name: registry name of the model, if any; ``source_url``/``source_sha256``: where the weights came from.
        keep_ema: also store the checkpoint's ``ema_state_dict`` (raw training weights) under ``ema_state_dict.*``.
        subnet_yaml: the subnet YAML text as the user gave it (default: the spec's canonical YAML).
        metadata: more ``razorzoo_*`` metadata entries to store (provenance, e.g. a training run or a search).

    Raises:
        PairMismatchError: the checkpoint does not hold the weights of ``spec`` (the message says how, in YAML terms).
        OutputError: ``output`` is a directory or the checkpoint file itself (checked before reading anything), or
            cannot be written (nothing is left behind).
    """
    from razorzoo.weights.checkpoint import Checkpoint, read_checkpoint
    from razorzoo.weights.verify import verify_pair

    check_output(output, checkpoint.path if isinstance(checkpoint, Checkpoint) else checkpoint)
    if not isinstance(checkpoint, Checkpoint):
        checkpoint = read_checkpoint(checkpoint, ema=keep_ema)
    report = verify_pair(spec, checkpoint.state_dict)
    report.raise_for_problems()
    keys = model_keys(spec)
    tensors = _stored_tensors(report.state_dict, keys)
    if keep_ema:
        if checkpoint.ema_state_dict is None:
            raise CheckpointError("keep_ema=True, but the checkpoint has no ema_state_dict (read it with ema=True)")
        ema = model_view(spec, checkpoint.ema_state_dict)
        tensors.update((EMA_PREFIX + k, _as_dtype(ema[k], keys.dtypes[k])) for k in keys.shapes if k in ema)
    extra = dict(metadata or {})
    if any(not key.startswith("razorzoo_") or not isinstance(value, str) for key, value in extra.items()):
        raise ValueError("extra metadata must map razorzoo_* names to strings")
    metadata = {
        **extra,
        "format": "pt",
        "razorzoo_version": __version__,
        "razorzoo_arch": json.dumps(spec.to_dict(), sort_keys=True),
        "razorzoo_name": name,
        "razorzoo_subnet_yaml": spec.subnet.to_yaml() if subnet_yaml is None else subnet_yaml,
        "razorzoo_tied": json.dumps([list(group) for group in keys.tied]),
        "source_url": source_url,
        "source_sha256": source_sha256,
    }
    return write_safetensors(tensors, metadata, output)


def check_output(output: str | Path, source: str | Path | None) -> None:
    """Refuse an ``output`` that cannot become the converted file, or that is the ``source`` checkpoint (replacing
    the user's only copy), before the minutes of reading and verifying."""
    check_output_file(output, what="the output", inputs=() if source is None else (source,),
                      input_what="the checkpoint being converted")


def _stored_tensors(aligned: Mapping[str, "torch.Tensor"], keys: ModelKeys) -> "OrderedDict[str, torch.Tensor]":
    """The verified weights as stored: each tied group once, under its first name, holding the value of its last
    alias (loading copies aliases in state-dict order, so upstream's effective weight is the last)."""
    aliases = {group[0]: group[-1] for group in keys.tied}
    dropped = {name for group in keys.tied for name in group[1:]}
    return OrderedDict((k, _as_dtype(aligned[aliases.get(k, k)], keys.dtypes[k])) for k in keys.shapes
                       if k not in dropped)


def _as_dtype(tensor: "torch.Tensor", dtype: "torch.dtype") -> "torch.Tensor":
    return tensor if tensor.dtype == dtype else tensor.to(dtype)


def write_safetensors(tensors: Mapping[str, "torch.Tensor"], metadata: Mapping[str, str], output: str | Path) -> Path:
    """Write a safetensors file tensor by tensor (no whole-file copy), atomically: on any error, nothing is left."""
    output = Path(output)
    header: dict[str, Any] = {"__metadata__": dict(sorted(metadata.items()))}
    offset = 0
    for key, tensor in tensors.items():
        size = tensor.numel() * tensor.element_size()
        header[key] = {"dtype": _DTYPES[str(tensor.dtype).removeprefix("torch.")], "shape": list(tensor.shape),
                       "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(output) as f:
            f.write(struct.pack("<Q", len(encoded)))
            f.write(encoded)
            for tensor in tensors.values():
                f.write(_raw_bytes(tensor))
    except OSError as exc:  # a full disk, a read-only directory, a file where a directory belongs
        raise OutputError(f"cannot write {safe_repr(str(output))}: {exc.strerror or type(exc).__name__}") from None
    return output


def _raw_bytes(tensor: "torch.Tensor") -> memoryview:
    """The tensor's bytes without a copy (contiguous CPU tensors, the normal case; others are copied once)."""
    import torch

    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy()) if flat.numel() else memoryview(b"")


def read_converted(path: str | Path) -> tuple[ArchSpec, "OrderedDict[str, torch.Tensor]", dict[str, str]]:
    """Read a razorzoo ``.safetensors`` file: its spec, a state dict ready for ``load_state_dict(strict=True)``
    (tied aliases point at one tensor again), and its metadata.

    Raises:
        CheckpointError: the file is not a safetensors file, or not one razorzoo wrote.
    """
    path = Path(path)
    metadata, state_dict = _read(path, tensors=True)
    spec = _spec(metadata, path)
    for group in _metadata_json(metadata, "razorzoo_tied", path):
        for alias in group[1:]:
            state_dict[alias] = state_dict[group[0]]
    return spec, state_dict, metadata


def read_spec(path: str | Path) -> ArchSpec:
    """The architecture a razorzoo ``.safetensors`` file records, from its metadata alone (no tensor is read)."""
    return read_converted_metadata(path)[0]


def read_converted_metadata(path: str | Path) -> tuple[ArchSpec, dict[str, str]]:
    """A razorzoo ``.safetensors`` file's spec and metadata (provenance entries included), without its tensors."""
    path = Path(path)
    metadata = _read(path, tensors=False)[0]
    return _spec(metadata, path), metadata


def _read(path: Path, *, tensors: bool) -> tuple[dict[str, str], "OrderedDict[str, torch.Tensor]"]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            _check_metadata(metadata, path)
            keys = [k for k in f.keys() if not k.startswith(EMA_PREFIX)] if tensors else []
            return metadata, OrderedDict((k, f.get_tensor(k)) for k in keys)
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc})") from exc


def _spec(metadata: Mapping[str, str], path: Path) -> ArchSpec:
    data = _metadata_json(metadata, "razorzoo_arch", path)
    try:
        return ArchSpec.from_dict(data)
    except (RazorzooError, TypeError, AttributeError) as exc:
        raise _corrupt(path, exc) from None


def _metadata_json(metadata: Mapping[str, str], key: str, path: Path) -> Any:
    try:
        return load_json(metadata[key], what=f"the {key} metadata")
    except InputError as exc:
        raise _corrupt(path, exc) from None


def _corrupt(path: Path, exc: Exception) -> CheckpointError:
    return CheckpointError(f"{path}: the razorzoo metadata is corrupt ({safe_repr(str(exc), 200)}); convert the "
                           "checkpoint again")


def _check_metadata(metadata: Mapping[str, str], path: Path) -> None:
    missing = [key for key in METADATA_KEYS if key not in metadata]
    if missing:
        raise CheckpointError(
            f"{path} is a safetensors file but not a razorzoo model file (metadata lacks {', '.join(missing)}); "
            "convert the original checkpoint with `razorzoo convert CHECKPOINT --subnet YAML -o OUT`"
        )


def load_weights(spec: ArchSpec, state_dict: Mapping[str, "torch.Tensor"], *, source: object, device: str = "cpu"
                 ) -> "nn.Module":
    """Build ``spec``'s model and load ``state_dict`` strictly, re-tie shared weights, eval.

    ``source`` names where the weights came from, for the error message.
    """
    from razorzoo.models.factory import build_model

    model = build_model(spec)
    try:
        # copy into the model's own tensors rather than adopt the file's (assign=True): adopting measurably changed
        # outputs by ~1e-7 against the same weights loaded by copy, while copying keeps loads bit-identical
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise PairMismatchError(f"{source} does not fit the model its metadata describes: {exc}") from exc
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    return model.to(device).eval()


_LOADERS = {"classification": "load_classifier", "detection": "load_detector", "backbone": "load_backbone"}


def as_task(spec: ArchSpec, state_dict: dict, task: str, out_indices: tuple[int, ...] | None, path: Path
            ) -> tuple[ArchSpec, dict]:
    """The spec and weights of a converted file's model for ``task`` (a loader's or an export's): a backbone comes out of a classifier or detector file's ``backbone.*``
    (upstream's ``Pretrained(prefix='backbone.')``, docs/upstream.md §3)."""
    if task == "backbone" and spec.task != "backbone":
        if out_indices is None and spec.recipe is not None:
            from razorzoo.arch.recipes import RECIPES

            out_indices = RECIPES[spec.recipe].out_indices
        prefix = "backbone."
        state_dict = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
        return ArchSpec("backbone", spec.subnet, out_indices=out_indices), state_dict
    if spec.task != task:
        raise RazorzooError(f"{path} holds a {spec.task} model; load it with razorzoo.{_LOADERS[spec.task]}"
                            + (" or razorzoo.load_backbone" if spec.task != "backbone" else ""))
    if out_indices is not None:
        spec = ArchSpec("backbone", spec.subnet, out_indices=tuple(out_indices))
    return spec, state_dict
