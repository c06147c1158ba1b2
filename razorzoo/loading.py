"""Registry name, local file or ``hf-hub:`` id -> a ready model: eval mode, weights loaded strictly.

This module is the public load API; the cache itself (layout, index, locks, removal) is
:class:`razorzoo.storage.cache.Cache`. A registry name goes name -> card -> :func:`razorzoo.storage.fetch.fetch`
(subnet YAML + weights, hash-checked) -> :func:`razorzoo.weights.convert.convert_checkpoint` (which runs
:func:`razorzoo.weights.verify.verify_pair` first and slices a supernet, docs/upstream.md §2.3) ->
``<cache>/models/<name>/<weights sha256>/model.safetensors``. ``<cache>/models/index.json`` maps the name and the
card's file references to that file, so the second load reads the index and the converted file: no network, no
conversion, and it works offline.

The architecture is always the subnet YAML shipped with the card (``cards/subnets/``), so building never needs the
network. When the card also names the published YAML (``subnet.url``), it is downloaded once, at conversion time, and
must describe the same subnet (``load_subnet`` equality; upstream copies differ only in key prefixes and
``expand_ratio_se`` keys, docs/upstream.md §1.4) — a card whose two YAMLs disagree is refused rather than silently trusted.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from razorzoo import constants
from razorzoo.arch.spec import requested_class_names
from razorzoo.bounded import safe_repr
from razorzoo.errors import OfflineError, PairMismatchError, RazorzooError, UnknownModelError
from razorzoo.storage.cache import Cache
from razorzoo.storage.fetch import cached, fetch, hash_matches, sha256_of_file

if TYPE_CHECKING:
    from torch import nn

    from razorzoo.models.detector import Detector
    from razorzoo.zoo.registry import Card

__all__ = ["load_detector", "load_classifier", "load_backbone", "export", "download", "converted_file", "source_kind"]

# a str with one of these suffixes (or a path separator) names a file; any other str is a registry name
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt", ".onnx", ".xml")


def load_detector(name_or_path_or_hub_id: str | os.PathLike, *, device: str = "cpu",
                  cache_dir: str | os.PathLike | None = None, offline: bool | None = None,
                  subnet: Any = None, detector: str | None = None, backend: str | None = None,
                  precision: str = "f32", threads: int | None = None, calib: Any = None, calib_n: int = 300,
                  num_classes: int | None = None, class_names: Sequence[str] | None = None) -> "Detector":
    """A COCO detector, ready for ``predict``.

    Args:
        name_or_path_or_hub_id: a registry name or alias (``"yolov6s-attentive_a6"``); a file: a ``pathlib.Path``,
            or a ``str`` with a path separator or a weights suffix (a converted ``.safetensors`` file, or an
            OpenMMLab ``.pth`` checkpoint, then ``subnet=`` is required); or ``"hf-hub:org/name[@rev]"``. Strings
            are never looked up on disk to decide: ``"attentive_a6"`` is the registry entry even if a file of that
            name exists.
        device: where to put the model. cache_dir: cache root (default ``RAZORZOO_CACHE``).
        offline: use only the cache (default ``RAZORZOO_OFFLINE`` / ``HF_HUB_OFFLINE``).
        subnet: for a ``.pth``: the subnet YAML (path, text or dict) or a registry name whose subnet to use.
        detector: for a ``.pth`` with a bare YAML: the neck/head recipe id or a detection entry's name.
        backend: ``"onnxruntime"`` or ``"openvino"``: run an exported ``.onnx`` (an int8 ``.xml``), with the same
            ``predict``; a name, ``hf-hub:`` id or ``.safetensors`` is exported once into the cache, as the
            end-to-end graph (NMS in the runtime) when it reproduces eager ``predict``, else the raw one.
            ``precision`` (OpenVINO: ``"f32"``, ``"bf16"``, ``"fp16"``, or ``"int8"``: quantized once with the
            ``calib`` images, the first ``calib_n``) and ``threads`` configure it (docs/deploy.md).
        num_classes, class_names: fine-tune on other classes: the weights load as published, then the class-
            dependent head layers are replaced and initialised as upstream does (``Detector.set_classes``);
            backbone, neck and the rest of the head keep their trained weights (docs/train.md).
    """
    names = requested_class_names(num_classes, class_names)
    if backend is not None:
        if names is not None:
            raise RazorzooError("num_classes/class_names re-initialise head layers for training; an exported model "
                                "runs as exported: load it without backend= to fine-tune")
        return _load_exported(name_or_path_or_hub_id, "detection", backend=backend, precision=precision,
                              threads=threads, cache_dir=cache_dir, offline=offline, calib=calib, calib_n=calib_n)
    detector_model = _load(name_or_path_or_hub_id, "detection", device=device, cache_dir=cache_dir, offline=offline,
                           subnet=subnet, detector=detector)
    return detector_model if names is None else detector_model.set_classes(names)


def load_classifier(name_or_path_or_hub_id: str | os.PathLike, *, device: str = "cpu",
                    cache_dir: str | os.PathLike | None = None, offline: bool | None = None,
                    subnet: Any = None, backend: str | None = None, precision: str = "f32",
                    threads: int | None = None, calib: Any = None, calib_n: int = 300) -> "nn.Module":
    """An ImageNet classifier (same sources and arguments as :func:`load_detector`)."""
    if backend is not None:
        return _load_exported(name_or_path_or_hub_id, "classification", backend=backend, precision=precision,
                              threads=threads, cache_dir=cache_dir, offline=offline, calib=calib, calib_n=calib_n)
    return _load(name_or_path_or_hub_id, "classification", device=device, cache_dir=cache_dir, offline=offline,
                 subnet=subnet)


def load_backbone(name_or_path_or_hub_id: str | os.PathLike, *, device: str = "cpu",
                  cache_dir: str | os.PathLike | None = None, offline: bool | None = None,
                  subnet: Any = None, out_indices: tuple[int, ...] | None = None) -> "nn.Module":
    """The backbone of a classifier or detector, with its trained weights (the checkpoint's ``backbone.*``).

    ``out_indices`` defaults to the detector recipe's (a detector entry) or upstream's default (a classifier).
    """
    return _load(name_or_path_or_hub_id, "backbone", device=device, cache_dir=cache_dir, offline=offline,
                 subnet=subnet, out_indices=out_indices)


def _load(source: str | os.PathLike, task: str, *, device: str, cache_dir, offline, subnet=None,
          detector: str | None = None, out_indices: tuple[int, ...] | None = None) -> Any:
    kind, value = source_kind(source)
    if kind == "hub":
        from razorzoo.storage.hub import download_hub_model

        return _load_file(download_hub_model(value, cache_dir=cache_dir, offline=offline), task, device, out_indices)
    if kind == "file":
        path = Path(value).expanduser()
        if not path.is_file():
            raise RazorzooError(f"{safe_repr(str(path), 200)} is not a file (expected a razorzoo .safetensors file or "
                                f"an OpenMMLab .pth checkpoint)")
        if path.suffix in (".onnx", ".xml"):
            raise RazorzooError(f"{safe_repr(str(path), 200)} is an exported model: run it with backend='onnxruntime' "
                                f"or backend='openvino' ({constants.docs_url('deploy.md')})")
        if path.suffix != ".safetensors":
            return _load_checkpoint(path, task, device, subnet, detector, out_indices)
        return _load_file(path, task, device, out_indices)
    if subnet is not None:
        raise RazorzooError("subnet= is only for .pth checkpoints; a registry name brings its own subnet YAML")
    _refuse_supernet(value, task)
    return _load_file(download(value, cache_dir=cache_dir, offline=offline), task, device, out_indices)


def converted_file(source: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None,
                   offline: bool | None = None) -> Path:
    """The converted ``.safetensors`` file behind a registry name, an ``hf-hub:`` id or a path (as given)."""
    kind, value = source_kind(source)
    if kind == "hub":
        from razorzoo.storage.hub import download_hub_model

        return download_hub_model(value, cache_dir=cache_dir, offline=offline)
    if kind == "file":
        path = Path(value).expanduser()
        if path.suffix != ".safetensors" or not path.is_file():
            raise RazorzooError(f"{safe_repr(value, 200)} is not a converted .safetensors file; convert a .pth first "
                                "with `razorzoo convert CHECKPOINT --subnet YAML -o model.safetensors`")
        return path
    _refuse_supernet(value, "classification")
    return download(value, cache_dir=cache_dir, offline=offline)


def export(model_or_source: Any, path: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None,
           offline: bool | None = None, **options: Any) -> Any:
    """Export a model to ONNX: a razorzoo model, or a registry name, ``hf-hub:`` id or converted file (resolved
    like the loaders do). ``options`` are :func:`razorzoo.deploy.export.export`'s (variant, opset, check, ...)."""
    from razorzoo.deploy.export import export as export_model
    from razorzoo.deploy.metadata import require_deploy
    from razorzoo.files import check_output_file

    require_deploy(export=True)  # before a download or conversion that would be wasted
    if not hasattr(model_or_source, "state_dict"):
        source = source_kind(model_or_source)
        check_output_file(path, what="the export path", inputs=[source[1]] if source[0] == "file" else [])
        model_or_source = converted_file(model_or_source, cache_dir=cache_dir, offline=offline)
    return export_model(model_or_source, path, **options)


def _load_exported(source: str | os.PathLike, task: str, *, backend: str, precision: str, threads: int | None,
                   cache_dir, offline, calib: Any = None, calib_n: int = 300) -> Any:
    """``backend=``: a ``.onnx`` (int8: ``.xml``) file as is; an ``hf-hub:`` repo's ``model.onnx`` when it has one
    (and no int8 is asked for); anything else exported once into the cache
    (:func:`razorzoo.deploy.cached.detector_export`, :func:`~razorzoo.deploy.cached.cached_export`; int8 with the
    ``calib`` images), then run on ``backend``."""
    from razorzoo.deploy.cached import cached_export, detector_export
    from razorzoo.deploy.metadata import require_deploy
    from razorzoo.deploy.runtime import check_precision, open_exported

    check_precision(backend, precision)
    kind, value = source_kind(source)
    path = Path(value).expanduser() if kind == "file" and value.lower().endswith((".onnx", ".xml")) else None
    if path is None and calib is not None and precision != "int8":
        raise RazorzooError("calib= is for precision='int8' (the images int8 quantization is calibrated with)")
    require_deploy(backend=backend, export=path is None and kind != "hub")  # before any download or export
    if kind == "hub" and precision != "int8":  # a repo pushed with --onnx carries its own export
        from razorzoo.storage.hub import download_hub_onnx

        path = download_hub_onnx(value, cache_dir=cache_dir, offline=offline)
    if path is None:
        require_deploy(backend=backend, export=True)
        converted = converted_file(source, cache_dir=cache_dir, offline=offline)
        options = {"int8": True, "calib": calib, "calib_n": calib_n} if precision == "int8" else {}
        path = (detector_export(converted, cache_dir=cache_dir, **options) if task == "detection"
                else cached_export(converted, task, cache_dir=cache_dir, **options))
    model = open_exported(path, backend=backend, precision=precision, threads=threads)
    if model.task != task:
        raise RazorzooError(f"{safe_repr(value, 200)} holds an exported {model.task} model; load it with "
                            f"razorzoo.{'load_detector' if model.task == 'detection' else 'load_classifier'}")
    return model


def source_kind(source: Any) -> tuple[str, str]:
    """("hub" | "file" | "name", text): decided by the type and spelling of ``source``, never by the disk."""
    if isinstance(source, os.PathLike):
        return "file", os.fspath(source)
    if not isinstance(source, str):
        raise RazorzooError(f"cannot load {safe_repr(source)}: pass a registry name, a file path or 'hf-hub:org/name'")
    if source.startswith("hf-hub:"):
        return "hub", source
    if source.lower().endswith(WEIGHT_SUFFIXES) or "/" in source or os.sep in source:
        return "file", source
    return "name", source


def _refuse_supernet(name: str, task: str) -> None:
    """A supernet card is sliced, not loaded: say so before downloading gigabytes (unknown names raise here too)."""
    from razorzoo.zoo.registry import all_cards, get_card

    try:
        card = get_card(name)
    except UnknownModelError as exc:
        try:
            is_file = Path(name).is_file()
        except (OSError, ValueError):  # a name too long to be a file, or with a NUL
            is_file = False
        if is_file:
            raise UnknownModelError(f"{exc}; to load the file {safe_repr(name)} in this directory, pass "
                                    f"pathlib.Path({safe_repr(name)}) or a path with its suffix ('./{name}')") from None
        raise
    if card.task != "supernet":
        return
    subnets = [c.name for c in all_cards() if c.task != "supernet" and c.weights.url == card.weights.url]
    loader = "load_backbone" if task == "backbone" else "load_classifier"  # a supernet holds ImageNet weights only
    example = f"razorzoo.{loader}({subnets[0]!r})" if subnets else None
    raise RazorzooError(
        f"{card.name!r} is a supernet: one checkpoint holding every {card.family} subnet's ImageNet weights, not a "
        f"model to load. " + (f"Load a subnet sliced from it ({example}; also {', '.join(subnets[1:])}), "
                              if subnets else "")
        + f"or slice your own: razorzoo.{loader}(PATH_TO_SUPERNET.pth, subnet='my_subnet.yaml') after "
          f"`razorzoo download {card.name}`, or razorzoo.extract_subnet(supernet_state_dict, 'my_subnet.yaml')")


def _load_checkpoint(path: Path, task: str, device: str, subnet: Any, detector: str | None,
                     out_indices: tuple[int, ...] | None) -> Any:
    """An OpenMMLab checkpoint: verify against ``subnet``, convert to a temporary file, load that."""
    from razorzoo.builder import resolve_spec
    from razorzoo.weights.convert import convert_checkpoint

    if subnet is None:
        raise RazorzooError(
            f"{path} is an OpenMMLab checkpoint, which does not say which subnet it holds: pass subnet= (the subnet "
            f"YAML, or a registry name{', and detector= a recipe id' if task == 'detection' else ''}), or convert it "
            f"once with `razorzoo convert {path} --subnet YAML -o model.safetensors`")
    spec = resolve_spec(subnet, task, detector=detector, out_indices=out_indices)
    with tempfile.TemporaryDirectory(prefix="razorzoo-") as tmp:
        converted = convert_checkpoint(path, spec, Path(tmp) / "model.safetensors", source_url=str(path))
        return _load_file(converted, task, device, out_indices)


def _load_file(path: Path, task: str, device: str, out_indices: tuple[int, ...] | None) -> Any:
    """Build the model a converted file describes (as ``task``), load it strictly, re-tie, eval."""
    from razorzoo.weights.convert import as_task, load_weights, read_converted

    spec, state_dict, _ = read_converted(path)
    spec, state_dict = as_task(spec, state_dict, task, out_indices, path)
    return load_weights(spec, state_dict, source=path, device=device)


# -- registry names: download, convert once, index -----------------------------------------------------------
def _card_key(card: "Card") -> dict[str, Any]:
    """What a converted file depends on besides the downloads' hashes: URLs, task, recipe, shipped YAML text."""
    subnet_text = card.subnet_path.read_bytes() if card.subnet_path is not None else b""
    return {"weights_url": card.weights.url, "subnet_url": card.subnet.url if card.subnet else None,
            "subnet_file_sha256": hashlib.sha256(subnet_text).hexdigest(), "task": card.task, "recipe": card.recipe}


def _indexed(cache: Cache, card: "Card") -> Path | None:
    """The converted file of ``card`` if the index has one made from the card's current files."""
    found = cache.converted(card.name)
    if found is None:
        return None
    entry, path = found
    try:
        if entry["key"] != _card_key(card) or not hash_matches(card.weights.sha256, entry["weights_sha256"]):
            return None
        if card.subnet and card.subnet.url and not hash_matches(card.subnet.sha256, entry["subnet_sha256"] or ""):
            return None
    except (KeyError, TypeError):  # an entry razorzoo did not write: convert again
        return None
    return path


def download(name: str, *, cache_dir: str | os.PathLike | None = None, offline: bool | None = None,
             progress: bool | None = None) -> Path:
    """Make registry model ``name`` ready in the cache and return its converted ``model.safetensors`` (for a
    supernet card: the downloaded checkpoint). Converts once; later calls only read the index."""
    from razorzoo.zoo.registry import get_card

    card = get_card(name)
    cache = Cache(cache_dir)
    if card.task == "supernet":
        return fetch(card.weights.url, sha256=card.weights.sha256, size=card.weights.size, cache_dir=cache.root,
                     offline=offline, progress=progress)
    hit = _indexed(cache, card)
    if hit is not None:
        return hit
    is_offline = offline if offline is not None else constants.offline()
    if is_offline:
        _raise_if_missing(card, cache.root)
    with cache.lock(cache.models, f".{card.name}.lock"):  # N processes: one converts, the others wait
        hit = _indexed(cache, card)
        return hit if hit is not None else _convert(card, cache, is_offline, progress)


def _files(card: "Card") -> list[tuple[str, str, str | None]]:
    """(what, url, expected sha256) of every file a card's conversion downloads."""
    files = [("weights", card.weights.url, card.weights.sha256)]
    if card.subnet is not None and card.subnet.url:
        files.insert(0, ("subnet YAML", card.subnet.url, card.subnet.sha256))
    return files


def _raise_if_missing(card: "Card", root: Path) -> None:
    missing = [f"  - {what}: {url}" for what, url, sha in _files(card)
               if cached(url, sha256=sha, cache_dir=root) is None]
    if missing:
        raise OfflineError(
            f"offline mode is on and {card.name!r} is not in the cache ({root}); missing:\n" + "\n".join(missing)
            + f"\nrun `razorzoo download {card.name}` with network access (or RAZORZOO_MIRROR set to a reachable "
              f"mirror) once, then load it offline; or unset RAZORZOO_OFFLINE / HF_HUB_OFFLINE")


def _convert(card: "Card", cache: Cache, offline: bool, progress: bool | None) -> Path:
    from razorzoo.weights.convert import convert_checkpoint
    from razorzoo.arch.spec import ArchSpec
    from razorzoo.arch.subnet import load_subnet

    root = cache.root
    published = None
    if card.subnet.url:
        published = fetch(card.subnet.url, sha256=card.subnet.sha256, size=card.subnet.size, cache_dir=root,
                          offline=offline, progress=progress)
    subnet_text = (card.subnet_path or published).read_text()
    subnet = load_subnet(subnet_text, family=card.family)
    if published is not None and card.subnet_path is not None:
        if load_subnet(published, family=card.family) != subnet:
            raise PairMismatchError(
                f"card {card.name!r}: the published subnet YAML {card.subnet.url} chooses a different architecture "
                f"than the shipped {card.subnet_path}; fix the card (or its RAZORZOO_CARDS override)")
    weights = fetch(card.weights.url, sha256=card.weights.sha256, size=card.weights.size, cache_dir=root,
                    offline=offline, progress=progress)
    weights_sha = cache.record(card.weights.url).sha256
    spec = ArchSpec(card.task, subnet, recipe=card.recipe, preprocessing=card.preprocessing)  # supernets left above
    relative = f"models/{card.name}/{weights_sha}/model.safetensors"
    output = cache.model_file({"path": relative})
    cache.ensure(output.parent)
    convert_checkpoint(weights, spec, output, name=card.name, source_url=card.weights.url,
                       source_sha256=weights_sha, subnet_yaml=subnet_text)
    with cache.update_index() as models:
        old = models.get(card.name)
        subnet_sha = cache.record(card.subnet.url).sha256 if published else None
        models[card.name] = {"key": _card_key(card), "path": relative, "sha256": sha256_of_file(output),
                             "size": output.stat().st_size, "weights_sha256": weights_sha, "subnet_sha256": subnet_sha}
        if isinstance(old, dict) and old.get("path") != relative:  # the card moved on: drop the stale conversion
            cache.remove_converted(old)
    return output
