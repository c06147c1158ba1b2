"""Publish custom subnets to the Hugging Face Hub, and resolve ``hf-hub:org/name[@revision]`` back to files.

A razorzoo Hub repo holds four files, written in one commit: ``model.safetensors`` (converted weights whose metadata
carries the architecture), ``config.json`` (the same :class:`~razorzoo.arch.spec.ArchSpec` as a dict), ``subnet.yaml``
(the searched subnet, canonical form) and ``README.md`` (a card in the zoo's card format, with ``library_name:
razorzoo`` so ``list_models(filter="razorzoo")`` finds it).

All network traffic goes through ``huggingface_hub``: its cache, its auth (``HF_TOKEN``), its offline mode. The
endpoint is read from ``HF_ENDPOINT`` at call time (``huggingface_hub.constants`` reads it once, at import), so a
private team hub can be switched to without restarting. Nothing here imports torch at module level.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping

from razorzoo import constants
from razorzoo.errors import CardError, HubError, OfflineError, RazorzooError

if TYPE_CHECKING:
    from huggingface_hub import HfApi

    from razorzoo.zoo.registry import Card
    from razorzoo.arch.spec import ArchSpec

__all__ = ["push_to_hub", "download_hub_model", "list_hub_models", "load_hub_card", "parse_hub_ref",
           "parse_metrics", "HubRef"]

HUB_PREFIX = "hf-hub:"
LIBRARY_NAME = "razorzoo"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
SUBNET_FILE = "subnet.yaml"
CARD_FILE = "README.md"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")

# search algorithm and space that produced subnets of each family (UPSTREAM.md §2)
_SEARCH = {
    "spos": ("SPOS", "SearchableShuffleNetV2"),
    "attentive": ("AttentiveNAS", "AttentiveMobileNetV3"),
    "ofa": ("Once-for-All", "OFA MobileNetV3"),
}
_PIPELINE_TAGS = {"classification": "image-classification", "detection": "object-detection"}
_DATASETS = {"classification": ("ImageNet-1k", "imagenet-1k"), "detection": ("COCO 2017", "coco")}


@dataclass(frozen=True)
class HubRef:
    """A parsed ``hf-hub:org/name[@revision]``; ``revision`` is None for the default branch."""

    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return f"{HUB_PREFIX}{self.repo_id}" + (f"@{self.revision}" if self.revision else "")


def parse_hub_ref(ref: str) -> HubRef:
    """Parse ``hf-hub:org/name[@revision]`` (the prefix is optional); raise :class:`HubError` when malformed."""
    repo_id, at, revision = ref.removeprefix(HUB_PREFIX).partition("@")
    if not _REPO_ID.match(repo_id) or (at and not revision):
        raise HubError(f"invalid Hub reference {ref!r}: expected 'hf-hub:org/name' or 'hf-hub:org/name@revision'")
    return HubRef(repo_id, revision or None)


def parse_metrics(metrics: Mapping[str, Any] | Iterable[str] | None) -> dict[str, float]:
    """Metrics as ``{name: float}`` from a mapping or from ``"name=value"`` strings (the CLI's ``--metric``)."""
    if metrics is None:
        return {}
    items = metrics.items() if isinstance(metrics, Mapping) else (_split_metric(m) for m in metrics)
    parsed = {}
    for name, value in items:
        if not name or value is None or str(value).strip() == "":
            raise HubError(f"metric {name!r} has no value: pass it as NAME=VALUE, e.g. box_ap=45.1")
        try:
            parsed[str(name)] = float(value)
        except (TypeError, ValueError):
            raise HubError(f"metric {name!r} has a non-numeric value {value!r}; expected e.g. box_ap=45.1") from None
    return parsed


def _split_metric(text: str) -> tuple[str, str | None]:
    name, sep, value = text.partition("=")
    if not sep:
        raise HubError(f"metric {text!r} has no value: pass it as NAME=VALUE, e.g. box_ap=45.1")
    return name.strip(), value.strip()


# -- environment, read at call time (razorzoo.constants) -------------------------------------------------------
def _endpoint() -> str:
    from huggingface_hub import constants as hf_constants

    return constants.hub_endpoint() or hf_constants.ENDPOINT


def _hub_cache(cache_dir: str | os.PathLike | None) -> str:
    """``<cache_dir>/hub`` when razorzoo is given a cache root, else the Hub's own cache."""
    if cache_dir is not None:
        return str(Path(cache_dir) / "hub")
    from huggingface_hub import constants as hf_constants

    return str(constants.hub_cache_dir() or hf_constants.HF_HUB_CACHE)


def _is_offline(offline: bool | None) -> bool:
    return constants.offline() if offline is None else offline


def _require_online(what: str) -> None:
    if _is_offline(None):
        raise OfflineError(f"{what} needs the network, but offline mode is on (HF_HUB_OFFLINE / RAZORZOO_OFFLINE)")


def _api(token: str | None = None) -> "HfApi":
    from huggingface_hub import HfApi

    return HfApi(endpoint=_endpoint(), token=token, library_name=LIBRARY_NAME)


@contextlib.contextmanager
def _hub_errors(what: str, repo_id: str) -> Iterator[None]:
    """Turn ``huggingface_hub`` errors into :class:`HubError`s that say what failed and what to do."""
    from huggingface_hub.errors import (
        HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled, RemoteEntryNotFoundError,
        RepositoryNotFoundError, RevisionNotFoundError,
    )

    try:
        yield
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as exc:
        raise OfflineError(f"{what}: {repo_id} is not in the Hub cache and offline mode is on; run once online "
                           f"(unset HF_HUB_OFFLINE / RAZORZOO_OFFLINE) to cache it") from exc
    except RevisionNotFoundError as exc:
        raise HubError(f"{what}: {repo_id} has no such revision (a branch, tag or 40-hex commit id)") from exc
    except RemoteEntryNotFoundError as exc:
        raise HubError(f"{what}: {repo_id} is not a razorzoo repo (a file is missing: {exc})") from exc
    except RepositoryNotFoundError as exc:
        raise HubError(f"{what}: repository {repo_id} not found at {_endpoint()}; if it is private, set HF_TOKEN "
                       f"to a token that can read it") from exc
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status == 401:
            raise HubError(f"{what}: the Hub at {_endpoint()} refused the token (401); check HF_TOKEN or token=") \
                from exc
        if status == 403:
            raise HubError(f"{what}: no write access to {repo_id}; the name belongs to someone else, pick a repo "
                           f"under your own namespace") from exc
        raise HubError(f"{what}: {repo_id}: {exc}") from exc


# -- download ----------------------------------------------------------------------------------------------------
def _download(ref: HubRef, filename: str, *, revision: str | None, cache_dir, offline: bool | None) -> Path:
    from huggingface_hub import hf_hub_download

    with _hub_errors(f"cannot download {filename}", str(ref)):
        return Path(hf_hub_download(ref.repo_id, filename, revision=revision, cache_dir=_hub_cache(cache_dir),
                                    endpoint=_endpoint(), local_files_only=_is_offline(offline),
                                    library_name=LIBRARY_NAME))


def download_hub_model(ref: str, *, cache_dir: str | os.PathLike | None = None,
                       offline: bool | None = None) -> Path:
    """Path of ``model.safetensors`` of ``hf-hub:org/name[@revision]``, downloaded through the Hub cache.

    ``config.json`` is fetched first and ``model.safetensors`` at the *same commit*, so a push in between cannot pair
    files of two commits; the safetensors metadata must describe the same architecture as ``config.json``. Cached
    files are not downloaded again; offline (``offline=True``, ``HF_HUB_OFFLINE=1`` or razorzoo's offline flag)
    only the cache is used.
    """
    from razorzoo.arch.spec import ArchSpec

    hub_ref = parse_hub_ref(ref)
    config_path = _download(hub_ref, CONFIG_FILE, revision=hub_ref.revision, cache_dir=cache_dir, offline=offline)
    commit = config_path.parent.name  # the Hub cache keeps files under snapshots/<commit>/
    weights_path = _download(hub_ref, WEIGHTS_FILE, revision=commit, cache_dir=cache_dir, offline=offline)
    try:
        config = json.loads(config_path.read_text())
        stored = ArchSpec.from_dict(json.loads(_safetensors_metadata(weights_path)["razorzoo_arch"]))
        expected = ArchSpec.from_dict(config)
    except (KeyError, ValueError, RazorzooError) as exc:
        raise HubError(f"{hub_ref} at {commit}: model.safetensors or config.json is not a razorzoo file ({exc})") \
            from exc
    if stored != expected:
        raise HubError(f"{hub_ref} at {commit}: model.safetensors describes a different architecture than "
                       f"config.json; the repo is inconsistent, ask its owner to push again with razorzoo push")
    return weights_path


def _safetensors_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:  # reads the header only
        return f.metadata() or {}


def list_hub_models(author: str | None = None) -> list[dict[str, Any]]:
    """razorzoo models on the Hub (``library_name: razorzoo``), optionally of one author or organization.

    Each entry: ``id`` (``hf-hub:org/name``), ``repo_id``, ``author``, ``task``, ``family``, ``base``, ``private``,
    ``downloads``, ``likes``, ``last_modified`` (ISO date or None).
    """
    _require_online("listing Hub models")
    api = _api()
    with _hub_errors("cannot list Hub models", author or "the Hub"):
        infos = list(api.list_models(filter=LIBRARY_NAME, author=author, cardData=True))
    models = []
    for info in infos:
        card = info.card_data.to_dict() if info.card_data is not None else {}
        block = card.get("razorzoo") or {}
        models.append({
            "id": f"{HUB_PREFIX}{info.id}", "repo_id": info.id, "author": info.author,
            "task": block.get("task"), "family": block.get("family"), "base": block.get("base"),
            "private": bool(info.private), "downloads": info.downloads, "likes": info.likes,
            "last_modified": info.last_modified.isoformat() if info.last_modified else None,
        })
    return models


def load_hub_card(ref: str, *, cache_dir: str | os.PathLike | None = None, offline: bool | None = None) -> "Card":
    """The registry :class:`~razorzoo.zoo.registry.Card` of a Hub repo, parsed from its ``README.md`` by the registry's
    own parser (``subnet.yaml`` of the same commit is fetched too: the card refers to it)."""
    from razorzoo.zoo.registry import parse_card

    hub_ref = parse_hub_ref(ref)
    path = _download(hub_ref, CARD_FILE, revision=hub_ref.revision, cache_dir=cache_dir, offline=offline)
    _download(hub_ref, SUBNET_FILE, revision=path.parent.name, cache_dir=cache_dir, offline=offline)
    return parse_card(path, source=str(hub_ref))


# -- push --------------------------------------------------------------------------------------------------------
def push_to_hub(
    repo_id: str,
    *,
    subnet: str | os.PathLike | Mapping,
    weights: str | os.PathLike,
    base: str,
    token: str | None = None,
    private: bool = False,
    revision: str | None = None,
    metrics: Mapping[str, Any] | Iterable[str] | None = None,
    card_extra: Mapping[str, Any] | None = None,
    constraint: str | None = None,
) -> str:
    """Publish a searched subnet and its weights as a Hub repo; return the repo URL.

    Args:
        repo_id: ``org/name`` under your user or one of your organizations.
        subnet: the search result (``best_fix_subnet.yaml``: path, YAML text or mapping).
        weights: the checkpoint trained for it (an MMRazor/MMYOLO ``.pth``, or a supernet to slice from).
        base: the registry entry the model follows: its task, family and detector recipe (``attentive_a6``,
            ``yolov6s-attentive_a6``).
        token: a Hub token with write access; defaults to ``HF_TOKEN`` / the saved login.
        private: create the repo private (an existing repo keeps its visibility).
        revision: branch to commit to, created from the default branch if missing (default: the default branch).
        metrics: evaluation results for the card's ``model-index``: ``{"box_ap": 45.1}`` or ``["box_ap=45.1"]``.
        card_extra: extra top-level card metadata (``license``, ``datasets``, ...).
        constraint: the search constraint, recorded in the card (``"flops<=300M"``).

    Everything is checked (token, namespace, subnet, pair) before anything is uploaded, and all files go up in one
    commit; pushing identical files again makes no new commit.
    """
    from huggingface_hub import CommitOperationAdd, get_token

    if not _REPO_ID.match(repo_id):
        raise HubError(f"invalid repo id {repo_id!r}: expected 'org/name'")
    token = token or get_token()
    if not token:
        raise HubError("pushing needs a Hub token with write access: pass token=, set HF_TOKEN, or run "
                       "`hf auth login`")
    _require_online(f"pushing {repo_id}")
    metric_values = parse_metrics(metrics)
    api = _api(token)
    _check_namespace(api, repo_id)

    from razorzoo.zoo.registry import get_card

    card = get_card(base)
    spec = _spec_for(subnet, card)
    with tempfile.TemporaryDirectory(prefix="razorzoo-push-") as tmp:
        files = _write_repo_files(Path(tmp), repo_id, spec, card, weights, metric_values, card_extra, constraint)
        with _hub_errors("cannot push", repo_id):
            url = api.create_repo(repo_id, private=private, exist_ok=True)
            if revision is not None:
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            api.create_commit(
                repo_id,
                [CommitOperationAdd(name, str(path)) for name, path in files.items()],
                commit_message=f"Publish {repo_id} with razorzoo (base {card.name})",
                revision=revision,
            )
    return str(url)


def _check_namespace(api: "HfApi", repo_id: str) -> None:
    """Refuse a bad token or a namespace the token cannot write to, before any conversion work."""
    with _hub_errors("cannot push", repo_id):
        who = api.whoami()
    namespace = repo_id.split("/")[0]
    mine = {who["name"], *(org["name"] for org in who.get("orgs", []))}
    if namespace not in mine:
        raise HubError(f"cannot push to {repo_id}: the namespace {namespace!r} belongs to someone else (your token "
                       f"writes to {', '.join(sorted(mine))}); use e.g. {who['name']}/{repo_id.split('/')[1]}")


def _spec_for(subnet: Any, card: "Card") -> "ArchSpec":
    """The spec of a custom subnet following ``card``: same task, family and detector recipe."""
    from razorzoo.arch.spec import ArchSpec
    from razorzoo.arch.subnet import load_subnet

    if card.task not in ("classification", "detection"):
        raise HubError(f"base {card.name!r} is a {card.task}; pass a classification or detection entry as base")
    parsed = load_subnet(subnet, family=card.family)  # validates against the search space (SubnetError)
    return ArchSpec(card.task, parsed, recipe=card.recipe if card.task == "detection" else None)


def _write_repo_files(out: Path, repo_id: str, spec: "ArchSpec", base: "Card", weights, metrics: dict[str, float],
                      card_extra: Mapping[str, Any] | None, constraint: str | None) -> dict[str, Path]:
    """Verify the pair, convert, and write the four repo files into ``out``."""
    from razorzoo.version import __version__
    from razorzoo.weights.convert import convert_checkpoint
    from razorzoo.storage.fetch import sha256_of_file
    from razorzoo.zoo.registry import parse_card
    from razorzoo.weights.verify import verify_pair

    report = verify_pair(spec, weights)
    if not report.ok:
        problems = "\n  ".join(map(str, report.problems))
        raise HubError(f"cannot push {repo_id}: {weights} does not fit the subnet YAML:\n  {problems}")
    convert_checkpoint(weights, spec, out / WEIGHTS_FILE, name="", source_url="",
                       source_sha256=sha256_of_file(weights))
    config = {**spec.to_dict(), "razorzoo_version": __version__, "base": base.name}
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (out / SUBNET_FILE).write_text(spec.subnet.to_yaml())
    readme = render_card(repo_id, spec, base, stats=_model_stats(spec, base), metrics=metrics, extra=card_extra,
                         constraint=constraint,
                         sha256={name: sha256_of_file(out / name) for name in (WEIGHTS_FILE, SUBNET_FILE)})
    (out / CARD_FILE).write_text(readme, encoding="utf-8")
    try:  # the card must read back through the registry (metric ranges, names) before anything is uploaded
        parse_card(out / CARD_FILE)
    except CardError as exc:
        raise HubError(f"cannot push {repo_id}: the generated card is invalid: {exc}") from exc
    return {name: out / name for name in (WEIGHTS_FILE, CONFIG_FILE, SUBNET_FILE, CARD_FILE)}


def _model_stats(spec: "ArchSpec", base: "Card") -> dict[str, Any]:
    """``num_params`` and ``flops`` in the card schema, at the base card's FLOPs input so the numbers compare."""
    from razorzoo.builder import build_model
    from razorzoo.models.flops import count_flops

    input_shape = list(base.flops_input or (1, 3, 224, 224))
    report = count_flops(build_model(spec), input_shape)
    return {"num_params": report.params, "flops": {"value": report.flops, "unit": "MAC", "input": input_shape}}


def _file_url(repo_id: str, filename: str) -> str:
    # cards require https URLs; a plain-http endpoint (a local test hub) is named by the public Hub form instead,
    # the ``hf-hub:`` id in ``hub_id`` is what razorzoo resolves
    endpoint = _endpoint() if _endpoint().startswith("https://") else "https://huggingface.co"
    return f"{endpoint}/{repo_id}/resolve/main/{filename}"


def render_card(repo_id: str, spec: "ArchSpec", base: "Card", *, stats: Mapping[str, Any],
                metrics: Mapping[str, float], extra: Mapping[str, Any] | None = None,
                constraint: str | None = None, sha256: Mapping[str, str] | None = None) -> str:
    """The repo's ``README.md``: Hub metadata and the zoo's ``razorzoo:`` block (``razorzoo.zoo.registry`` reads it),
    then a short human-readable body. ``sha256`` maps repo file names to their hashes."""
    import yaml

    from razorzoo.zoo.registry import METRICS

    algorithm, space = _SEARCH[spec.subnet.family]
    sha256 = sha256 or {}
    pipeline_tag = _PIPELINE_TAGS[spec.task]
    dataset_name, dataset_type = _DATASETS[spec.task]
    meta: dict[str, Any] = {
        "library_name": LIBRARY_NAME,
        "pipeline_tag": pipeline_tag,
        "tags": [LIBRARY_NAME, "mmrazor", "nas", spec.subnet.family, pipeline_tag, f"base:{base.name}"],
        "datasets": [dataset_type],
    }
    base_hub_id = base.meta.get("hub_id")
    if base_hub_id:  # the Hub validates base_model as a repo id; built-in zoo entries are named in razorzoo.base
        meta["base_model"] = base_hub_id
    if metrics:
        meta["model-index"] = [{"name": repo_id, "results": [{
            "task": {"type": pipeline_tag},
            "dataset": {"type": dataset_type, "name": dataset_name},
            "metrics": [{"type": name, "name": name, "value": value} for name, value in metrics.items()],
        }]}]
    meta.update(extra or {})
    block: dict[str, Any] = {
        "name": repo_id.split("/")[1], "task": spec.task, "family": spec.subnet.family, "aliases": [],
        **({"recipe": spec.recipe} if spec.recipe else {}),
        "base": base.name, "hub_id": repo_id,
        "algorithm": base.meta.get("algorithm", algorithm), "search_space": base.meta.get("search_space", space),
        **({"constraint": constraint} if constraint else {}),
        "subnet": {"url": _file_url(repo_id, SUBNET_FILE), "sha256": sha256.get(SUBNET_FILE), "file": SUBNET_FILE},
        "weights": {"url": _file_url(repo_id, WEIGHTS_FILE), "sha256": sha256.get(WEIGHTS_FILE),
                    "layout": "razorzoo"},
        **stats,
        # the registry schema takes its own metric names only; every metric is in model-index
        "metrics": {name: value for name, value in metrics.items() if name in METRICS},
    }
    meta["razorzoo"] = block
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    loader = {"classification": "load_classifier", "detection": "load_detector"}[spec.task]
    rows = "".join(f"| {name} | {value:g} |\n" for name, value in metrics.items()) or "| (none reported) | |\n"
    flops = stats["flops"]
    return (
        f"---\n{front}---\n\n"
        f"# {repo_id}\n\n"
        f"A subnet of the {space} search space found by {algorithm} search, published with razorzoo. It follows "
        f"the built-in entry `{base.name}`" + (f" (detector recipe `{spec.recipe}`)" if spec.recipe else "") + ".\n\n"
        f"- Search: {block['algorithm']}" + (f", constraint `{constraint}`" if constraint else "") + "\n"
        f"- Params: {stats['num_params'] / 1e6:.2f} M; FLOPs: {flops['value'] / 1e9:.3f} G (multiply-accumulates) "
        f"at input {flops['input']}\n\n"
        f"| metric | value |\n|---|---|\n{rows}\n"
        f"## Usage\n\n```python\nimport razorzoo\n\n"
        f"model = razorzoo.{loader}(\"{HUB_PREFIX}{repo_id}\")\n```\n\n"
        f"The subnet is in `{SUBNET_FILE}`; the architecture is also in `{CONFIG_FILE}` and in the metadata of "
        f"`{WEIGHTS_FILE}`.\n"
    )
