"""Registry name, local file or ``hf-hub:`` id -> a ready model: eval mode, weights loaded strictly.

A registry name goes name -> card -> :func:`razorzoo.storage.fetch.fetch` (subnet YAML + weights, hash-checked) ->
:func:`razorzoo.weights.convert.convert_checkpoint` (which runs :func:`razorzoo.weights.verify.verify_pair` first and slices a
supernet, §2.3) -> ``<cache>/models/<name>/<weights sha256>/model.safetensors``. ``<cache>/models/index.json`` maps
the name and the card's file references to that file, so the second load reads the index and the converted file:
no network, no conversion, and it works offline.

The architecture is always the subnet YAML shipped with the card (``cards/subnets/``), so building never needs the
network. When the card also names the published YAML (``subnet.url``), it is downloaded once, at conversion time, and
must describe the same subnet (``load_subnet`` equality; upstream copies differ only in key prefixes and
``expand_ratio_se`` keys, §1.4) — a card whose two YAMLs disagree is refused rather than silently trusted.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from razorzoo import constants
from razorzoo.errors import OfflineError, PairMismatchError, RazorzooError
from razorzoo.storage.fetch import (
    cached, cached_file, fetch, hash_matches, remove_download, sha256_of_file, write_json_atomic,
)

if TYPE_CHECKING:
    from torch import nn

    from razorzoo.models.detector import Detector
    from razorzoo.zoo.registry import Card
    from razorzoo.arch.spec import ArchSpec

__all__ = ["load_detector", "load_classifier", "load_backbone", "download", "cached_models", "remove_model",
           "verify_cached_model", "CachedModel", "MODELS_DIR"]

MODELS_DIR = "models"
_INDEX = "index.json"
_WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
_CARD_TASKS = {"classification": "classification", "detection": "detection"}  # card task -> ArchSpec task


def load_detector(name_or_path_or_hub_id: str | os.PathLike, *, device: str = "cpu",
                  cache_dir: str | os.PathLike | None = None, offline: bool | None = None,
                  subnet: Any = None, detector: str | None = None) -> "Detector":
    """A COCO detector, ready for ``predict``.

    Args:
        name_or_path_or_hub_id: a registry name or alias (``"yolov6s-attentive_a6"``), a converted ``.safetensors``
            file, an OpenMMLab ``.pth`` checkpoint (then ``subnet=`` is required), or ``"hf-hub:org/name[@rev]"``.
        device: where to put the model. cache_dir: cache root (default ``RAZORZOO_CACHE``).
        offline: use only the cache (default ``RAZORZOO_OFFLINE`` / ``HF_HUB_OFFLINE``).
        subnet: for a ``.pth``: the subnet YAML (path, text or dict) or a registry name whose subnet to use.
        detector: for a ``.pth`` with a bare YAML: the neck/head recipe id or a detection entry's name.
    """
    return _load(name_or_path_or_hub_id, "detection", device=device, cache_dir=cache_dir, offline=offline,
                 subnet=subnet, detector=detector)


def load_classifier(name_or_path_or_hub_id: str | os.PathLike, *, device: str = "cpu",
                    cache_dir: str | os.PathLike | None = None, offline: bool | None = None,
                    subnet: Any = None) -> "nn.Module":
    """An ImageNet classifier (same sources and arguments as :func:`load_detector`)."""
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
    text = os.fspath(source)
    if text.startswith("hf-hub:"):
        from razorzoo.hub import download_hub_model

        return _load_file(download_hub_model(text, cache_dir=cache_dir, offline=offline), task, device, out_indices)
    if isinstance(source, os.PathLike) or text.endswith((".safetensors", *_WEIGHT_SUFFIXES)) or os.sep in text:
        path = Path(text).expanduser()
        if not path.is_file():
            raise RazorzooError(f"{path} does not exist (expected a razorzoo .safetensors file or a .pth checkpoint)")
        if path.suffix != ".safetensors":
            return _load_checkpoint(path, task, device, subnet, detector, out_indices)
        return _load_file(path, task, device, out_indices)
    if subnet is not None:
        raise RazorzooError("subnet= is only for .pth checkpoints; a registry name brings its own subnet YAML")
    return _load_file(download(text, cache_dir=cache_dir, offline=offline), task, device, out_indices)


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
    from razorzoo.weights.convert import load_weights, read_converted

    spec, state_dict, _ = read_converted(path)
    spec, state_dict = _as_task(spec, state_dict, task, out_indices, path)
    return load_weights(spec, state_dict, source=path, device=device)


def _as_task(spec: "ArchSpec", state_dict: dict, task: str, out_indices: tuple[int, ...] | None, path: Path
             ) -> tuple["ArchSpec", dict]:
    """The spec and weights for ``task``: a backbone comes out of a classifier or detector file's ``backbone.*``
    (upstream's ``Pretrained(prefix='backbone.')``, §3)."""
    from razorzoo.arch.spec import ArchSpec

    if task == "backbone" and spec.task != "backbone":
        if out_indices is None and spec.recipe is not None:
            from razorzoo.arch.recipes import RECIPES

            out_indices = RECIPES[spec.recipe].out_indices
        prefix = "backbone."
        state_dict = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
        return ArchSpec("backbone", spec.subnet, out_indices=out_indices), state_dict
    if spec.task != task:
        loaders = {"classification": "load_classifier", "detection": "load_detector", "backbone": "load_backbone"}
        raise RazorzooError(f"{path} holds a {spec.task} model; load it with razorzoo.{loaders[spec.task]}"
                            + (" or razorzoo.load_backbone" if spec.task != "backbone" else ""))
    if out_indices is not None:
        spec = ArchSpec("backbone", spec.subnet, out_indices=tuple(out_indices))
    return spec, state_dict


# -- the converted-model cache -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class CachedModel:
    """An entry of ``<cache>/models/index.json``."""

    name: str
    path: Path
    sha256: str  # of the converted file
    size: int
    weights_url: str
    weights_sha256: str  # full hash of the downloaded checkpoint
    subnet_url: str | None


def _root(cache_dir: str | os.PathLike | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else constants.cache_dir()


def _card_key(card: "Card") -> dict[str, Any]:
    """What a converted file depends on besides the downloads' hashes: URLs, task, recipe, shipped YAML text."""
    subnet_text = card.subnet_path.read_bytes() if card.subnet_path is not None else b""
    return {"weights_url": card.weights.url, "subnet_url": card.subnet.url if card.subnet else None,
            "subnet_file_sha256": hashlib.sha256(subnet_text).hexdigest(), "task": card.task, "recipe": card.recipe}


def _read_index(root: Path) -> dict[str, dict[str, Any]]:
    try:
        return json.loads((root / MODELS_DIR / _INDEX).read_text())["models"]
    except (OSError, ValueError, KeyError):
        return {}


@contextlib.contextmanager
def _index_for_update(root: Path) -> Iterator[dict[str, dict[str, Any]]]:
    """The index, locked; written back atomically when the block succeeds."""
    from filelock import FileLock

    (root / MODELS_DIR).mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / MODELS_DIR / ".index.lock")):
        models = _read_index(root)
        yield models
        write_json_atomic(root / MODELS_DIR / _INDEX, {"version": 1, "models": models})


def _indexed(root: Path, card: "Card") -> Path | None:
    entry = _read_index(root).get(card.name)
    if entry is None or entry["key"] != _card_key(card) or not hash_matches(card.weights.sha256,
                                                                          entry["weights_sha256"]):
        return None
    if card.subnet and card.subnet.url and not hash_matches(card.subnet.sha256, entry["subnet_sha256"] or ""):
        return None
    path = root / entry["path"]
    return path if path.is_file() else None


def download(name: str, *, cache_dir: str | os.PathLike | None = None, offline: bool | None = None,
             progress: bool | None = None) -> Path:
    """Make registry model ``name`` ready in the cache and return its converted ``model.safetensors`` (for a
    supernet card: the downloaded checkpoint). Converts once; later calls only read the index."""
    from filelock import FileLock

    from razorzoo.zoo.registry import get_card

    card = get_card(name)
    root = _root(cache_dir)
    if card.task == "supernet":
        return fetch(card.weights.url, sha256=card.weights.sha256, cache_dir=root, offline=offline,
                     progress=progress)
    hit = _indexed(root, card)
    if hit is not None:
        return hit
    is_offline = offline if offline is not None else constants.offline()
    if is_offline:
        _raise_if_missing(card, root)
    (root / MODELS_DIR).mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / MODELS_DIR / f".{card.name}.lock")):  # N processes: one converts, the others wait
        hit = _indexed(root, card)
        return hit if hit is not None else _convert(card, root, is_offline, progress)


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


def _convert(card: "Card", root: Path, offline: bool, progress: bool | None) -> Path:
    from razorzoo.weights.convert import convert_checkpoint
    from razorzoo.arch.spec import ArchSpec
    from razorzoo.arch.subnet import load_subnet

    published = None
    if card.subnet.url:
        published = fetch(card.subnet.url, sha256=card.subnet.sha256, cache_dir=root, offline=offline,
                          progress=progress)
    subnet_text = (card.subnet_path or published).read_text()
    subnet = load_subnet(subnet_text, family=card.family)
    if published is not None and card.subnet_path is not None:
        if load_subnet(published, family=card.family) != subnet:
            raise PairMismatchError(
                f"card {card.name!r}: the published subnet YAML {card.subnet.url} chooses a different architecture "
                f"than the shipped {card.subnet_path}; fix the card (or its RAZORZOO_CARDS override)")
    weights = fetch(card.weights.url, sha256=card.weights.sha256, cache_dir=root, offline=offline, progress=progress)
    weights_sha = cached_file(card.weights.url, cache_dir=root).sha256
    spec = ArchSpec(_CARD_TASKS[card.task], subnet, recipe=card.recipe, preprocessing=card.preprocessing)
    relative = Path(MODELS_DIR) / card.name / weights_sha / "model.safetensors"
    output = convert_checkpoint(weights, spec, root / relative, name=card.name, source_url=card.weights.url,
                                source_sha256=weights_sha, subnet_yaml=subnet_text)
    with _index_for_update(root) as models:
        old = models.get(card.name)
        subnet_sha = cached_file(card.subnet.url, cache_dir=root).sha256 if published else None
        models[card.name] = {"key": _card_key(card), "path": relative.as_posix(), "sha256": sha256_of_file(output),
                             "size": output.stat().st_size, "weights_sha256": weights_sha, "subnet_sha256": subnet_sha}
    if old is not None and old["path"] != relative.as_posix():  # the card moved on: drop the stale conversion
        shutil.rmtree((root / old["path"]).parent, ignore_errors=True)
    return output


def cached_models(cache_dir: str | os.PathLike | None = None) -> list[CachedModel]:
    """The converted models in the cache, sorted by name."""
    root = _root(cache_dir)
    return [CachedModel(name=name, path=root / e["path"], sha256=e["sha256"], size=e["size"],
                        weights_url=e["key"]["weights_url"], weights_sha256=e["weights_sha256"],
                        subnet_url=e["key"]["subnet_url"])
            for name, e in sorted(_read_index(root).items())]


def remove_model(name: str, *, cache_dir: str | os.PathLike | None = None) -> list[Path]:
    """Remove a converted model and the downloads no other cached model uses; return what was removed."""
    root = _root(cache_dir)
    removed: list[Path] = []
    with _index_for_update(root) as models:
        entry = models.pop(name, None)
        if entry is None:
            return removed
        path = root / entry["path"]
        shutil.rmtree(path.parent, ignore_errors=True)
        removed.append(path)
        in_use = {e["key"][k] for e in models.values() for k in ("weights_url", "subnet_url")}
        for url in (entry["key"]["weights_url"], entry["key"]["subnet_url"]):
            if url and url not in in_use:
                record = cached_file(url, cache_dir=root)
                if remove_download(url, cache_dir=root) and record is not None:
                    removed.append(record.path)
    return removed


def verify_cached_model(model: CachedModel) -> bool:
    """Re-hash a converted file against the index."""
    return model.path.is_file() and hash_matches(model.sha256, sha256_of_file(model.path))
