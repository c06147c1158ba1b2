"""Publish a searched subnet and its weights as a Hugging Face Hub repo (``razorzoo push``).

A razorzoo Hub repo holds four files, written in one commit: ``model.safetensors`` (converted weights whose metadata
carries the architecture), ``config.json`` (the same :class:`~razorzoo.arch.spec.ArchSpec` as a dict), ``subnet.yaml``
(the searched subnet, canonical form) and ``README.md`` (a card in the zoo's card format, with ``library_name:
razorzoo`` so ``list_models(filter="razorzoo")`` finds it). :mod:`razorzoo.storage.hub` resolves them back.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from razorzoo.bounded import InputError, check_number, safe_repr
from razorzoo.errors import CardError, HubError, PairMismatchError
from razorzoo.storage.hub import (
    CARD_FILE, CONFIG_FILE, HUB_PREFIX, LIBRARY_NAME, ONNX_FILE, SUBNET_FILE, WEIGHTS_FILE, api, check_repo_id,
    check_revision,
    endpoint, hub_errors, require_online,
)

if TYPE_CHECKING:
    from huggingface_hub import HfApi

    from razorzoo.arch.spec import ArchSpec
    from razorzoo.zoo.registry import Card

__all__ = ["push_to_hub", "parse_metrics", "render_hub_readme"]

# search algorithm and space that produced subnets of each family (docs/upstream.md §2)
_SEARCH = {
    "spos": ("SPOS", "SearchableShuffleNetV2"),
    "attentive": ("AttentiveNAS", "AttentiveMobileNetV3"),
    "ofa": ("Once-for-All", "OFA MobileNetV3"),
}
_PIPELINE_TAGS = {"classification": "image-classification", "detection": "object-detection"}
_DATASETS = {"classification": ("ImageNet-1k", "imagenet-1k"), "detection": ("COCO 2017", "coco")}
_METRIC_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")  # a metric name ends up in YAML, Markdown and terminals


def parse_metrics(metrics: Mapping[str, Any] | Iterable[str] | None) -> dict[str, float]:
    """Metrics as ``{name: float}`` from a mapping or from ``"name=value"`` strings (the CLI's ``--metric``)."""
    if metrics is None:
        return {}
    items = metrics.items() if isinstance(metrics, Mapping) else (_split_metric(m) for m in metrics)
    parsed = {}
    for name, value in items:
        if not isinstance(name, str) or not _METRIC_NAME.fullmatch(name):
            raise HubError(f"metric name {safe_repr(name)} is not a plain name (a letter, then up to 63 letters, "
                           "digits, '_', '.' or '-'), e.g. box_ap")
        if value is None or str(value).strip() == "":
            raise HubError(f"metric {safe_repr(name)} has no value: pass it as NAME=VALUE, e.g. box_ap=45.1")
        try:
            parsed[str(name)] = float(check_number(value, f"metric {safe_repr(name)}"))
        except InputError as exc:
            raise HubError(f"{exc}; expected e.g. box_ap=45.1") from None
    return parsed


def _split_metric(text: str) -> tuple[str, str | None]:
    name, sep, value = text.partition("=")
    if not sep:
        raise HubError(f"metric {safe_repr(text)} has no value: pass it as NAME=VALUE, e.g. box_ap=45.1")
    return name.strip(), value.strip()


def push_to_hub(
    repo_id: str,
    *,
    weights: str | os.PathLike,
    subnet: str | os.PathLike | Mapping | None = None,
    base: str | None = None,
    token: str | None = None,
    private: bool = False,
    revision: str | None = None,
    metrics: Mapping[str, Any] | Iterable[str] | None = None,
    card_extra: Mapping[str, Any] | None = None,
    constraint: str | None = None,
    onnx: bool = False,
) -> str:
    """Publish a searched subnet and its weights as a Hub repo; return the repo URL.

    Args:
        repo_id: ``org/name`` under your user or one of your organizations.
        weights: the checkpoint trained for the subnet (an MMRazor/MMYOLO ``.pth``, or a supernet to slice from), or
            a razorzoo ``.safetensors`` (e.g. ``RUN/best.safetensors`` of ``razorzoo train``), which carries its
            architecture, classes and training record: then ``subnet`` and ``base`` may be left out, and the card
            gets the run's recipe, data, epochs and validation AP.
        subnet: the search result (``best_fix_subnet.yaml``: path, YAML text or mapping).
        base: the registry entry the model follows: its task, family and detector recipe (``attentive_a6``,
            ``yolov6s-attentive_a6``); for a razorzoo file, default: the built-in detector of its recipe.
        token: a Hub token with write access; defaults to ``HF_TOKEN`` / the saved login.
        private: create the repo private (an existing repo keeps its visibility).
        revision: branch to commit to, created from the default branch if missing (default: the default branch).
        metrics: evaluation results for the card's ``model-index``: ``{"box_ap": 45.1}`` or ``["box_ap=45.1"]``.
        card_extra: extra top-level card metadata (``license``, ``datasets``, ...).
        constraint: the search constraint, recorded in the card (``"flops<=300M"``).
        onnx: also export ``model.onnx`` (parity gate on) into the same commit; ``load_detector("hf-hub:...",
            backend=...)`` then uses it instead of exporting locally (docs/deploy.md).

    Everything is checked (token, namespace, subnet, pair) before anything is uploaded, and all files go up in one
    commit; pushing identical files again makes no new commit.
    """
    from huggingface_hub import CommitOperationAdd, get_token

    check_repo_id(repo_id)
    if revision is not None:
        check_revision(revision, "branch")
    token = token or get_token()
    if not token:
        raise HubError("pushing needs a Hub token with write access: pass token=, set HF_TOKEN, or run "
                       "`hf auth login`")
    require_online(f"pushing {repo_id}")
    metric_values = parse_metrics(metrics)
    if constraint is not None and (not isinstance(constraint, str) or len(constraint) > 200
                                   or not constraint.isprintable() or "`" in constraint):
        raise HubError(f"constraint {safe_repr(constraint)} is not one printable line of at most 200 characters "
                       "(without backticks), e.g. 'flops<=300M'")
    if onnx:
        from razorzoo.deploy.metadata import require_deploy

        require_deploy(export=True)  # before the namespace check, the conversion and the upload
    hub = api(token)
    _check_namespace(hub, repo_id)

    spec, card, training = _source_of(weights, subnet, base)
    if training is not None and not metric_values and training.get("best_ap") is not None:
        metric_values = {"box_ap": round(100 * training["best_ap"], 2)}
    with tempfile.TemporaryDirectory(prefix="razorzoo-push-") as tmp:
        files = _write_repo_files(Path(tmp), repo_id, spec, card, weights, metric_values, card_extra, constraint,
                                  training)
        if onnx:  # a detector's end-to-end export when it reproduces eager predict, as load_detector would make
            from razorzoo.deploy.export import end_to_end_or_raw, export

            target = Path(tmp) / ONNX_FILE
            files[ONNX_FILE] = (end_to_end_or_raw(lambda variant: export(files[WEIGHTS_FILE], target, variant=variant),
                                                  repo_id) if spec.task == "detection"
                                else export(files[WEIGHTS_FILE], target)).path
        with hub_errors("cannot push", repo_id):
            url = hub.create_repo(repo_id, private=private, exist_ok=True)
            if revision is not None:
                hub.create_branch(repo_id, branch=revision, exist_ok=True)
            hub.create_commit(
                repo_id,
                [CommitOperationAdd(name, str(path)) for name, path in files.items()],
                commit_message=f"Publish {repo_id} with razorzoo (base {card.name})",
                revision=revision,
            )
    return str(url)


def _check_namespace(hub: "HfApi", repo_id: str) -> None:
    """Refuse a bad token or a namespace the token cannot write to, before any conversion work."""
    with hub_errors("cannot push", repo_id):
        who = hub.whoami()
    namespace = repo_id.split("/")[0]
    mine = {who["name"], *(org["name"] for org in who.get("orgs", []))}
    if namespace not in mine:
        raise HubError(f"cannot push to {repo_id}: the namespace {namespace!r} belongs to someone else (your token "
                       f"writes to {', '.join(sorted(mine))}); use e.g. {who['name']}/{repo_id.split('/')[1]}")


def _source_of(weights: Any, subnet: Any, base: str | None) -> tuple["ArchSpec", "Card", dict[str, Any] | None]:
    """The spec, base card and training record to publish: from a razorzoo file's own metadata, or from the subnet
    YAML and the base entry for an OpenMMLab checkpoint."""
    from razorzoo.arch.subnet import load_subnet
    from razorzoo.errors import CheckpointError
    from razorzoo.weights.convert import read_converted_metadata
    from razorzoo.zoo.registry import all_cards, get_card

    if str(weights).endswith(".safetensors"):
        try:
            spec, metadata = read_converted_metadata(weights)
        except CheckpointError as exc:
            raise HubError(f"cannot push {safe_repr(str(weights))}: {exc}") from None
        if subnet is not None and load_subnet(subnet, family=spec.subnet.family) != spec.subnet:
            raise HubError(f"--subnet does not describe {safe_repr(str(weights))}; leave it out: the file carries "
                           "its own subnet")
        if base is None:
            matching = [card for card in all_cards() if card.task == spec.task and card.recipe == spec.recipe
                        and card.family == spec.subnet.family] or \
                       [card for card in all_cards() if card.task == spec.task and card.recipe == spec.recipe]
            if not matching:
                raise HubError("no built-in entry of this model's task and recipe; pass base=")
            base = matching[0].name
        training = _training_record(metadata.get("razorzoo_training"))
        return spec, get_card(base), training
    if subnet is None or base is None:
        raise HubError("an OpenMMLab checkpoint does not say which subnet it holds: pass subnet= (the searched YAML) "
                       "and base= (the registry entry it follows)")
    card = get_card(base)
    return _spec_for(subnet, card), card, None


def _training_record(text: str | None) -> dict[str, Any] | None:
    """The ``razorzoo train`` record of a file's metadata (epochs, best AP, settings), or None."""
    if not text:
        return None
    from razorzoo.bounded import load_json

    try:
        record = load_json(text, what="the training record")
    except InputError:
        return None
    return record if isinstance(record, dict) else None


def _spec_for(subnet: Any, card: "Card") -> "ArchSpec":
    """The spec of a custom subnet following ``card``: same task, family and detector recipe."""
    from razorzoo.arch.spec import ArchSpec
    from razorzoo.arch.subnet import load_subnet
    from razorzoo.zoo.registry import subnet_source

    if card.task not in ("classification", "detection"):
        raise HubError(f"base {card.name!r} is a {card.task}; pass a classification or detection entry as base")
    parsed = load_subnet(subnet_source(subnet), family=card.family)  # validates against the search space
    return ArchSpec(card.task, parsed, recipe=card.recipe)  # None for a classification entry


def _write_repo_files(out: Path, repo_id: str, spec: "ArchSpec", base: "Card", weights, metrics: dict[str, float],
                      card_extra: Mapping[str, Any] | None, constraint: str | None,
                      training: dict[str, Any] | None = None) -> dict[str, Path]:
    """Verify the pair, convert, and write the four repo files into ``out`` (the checkpoint is read once)."""
    from razorzoo.version import __version__
    from razorzoo.storage.fetch import sha256_of_file
    from razorzoo.weights.checkpoint import read_checkpoint
    from razorzoo.weights.convert import convert_checkpoint
    from razorzoo.zoo.registry import parse_card

    checkpoint = read_checkpoint(weights)
    try:  # convert_checkpoint verifies the pair before it writes anything
        convert_checkpoint(checkpoint, spec, out / WEIGHTS_FILE, name="", source_url="",
                           source_sha256=sha256_of_file(weights))
    except PairMismatchError as exc:
        raise HubError(f"cannot push {repo_id}: {weights} does not fit the subnet YAML:\n  {exc}") from None
    del checkpoint
    config = {**spec.to_dict(), "razorzoo_version": __version__, "base": base.name}
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (out / SUBNET_FILE).write_text(spec.subnet.to_yaml())
    readme = render_hub_readme(repo_id, spec, base, stats=_model_stats(spec, base), metrics=metrics, extra=card_extra,
                               constraint=constraint, training=training,
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
    base = endpoint() if endpoint().startswith("https://") else "https://huggingface.co"
    return f"{base}/{repo_id}/resolve/main/{filename}"


def render_hub_readme(repo_id: str, spec: "ArchSpec", base: "Card", *, stats: Mapping[str, Any],
                      metrics: Mapping[str, float], extra: Mapping[str, Any] | None = None,
                      constraint: str | None = None, sha256: Mapping[str, str] | None = None,
                      training: Mapping[str, Any] | None = None) -> str:
    """The repo's ``README.md``: Hub metadata and the zoo's ``razorzoo:`` block (``razorzoo.zoo.registry`` reads it),
    then a short human-readable body. ``sha256`` maps repo file names to their hashes; ``training`` is the record
    ``razorzoo train`` stores in its weights (recipe, data, epochs, validation AP), shown in the card."""
    import yaml

    from razorzoo.zoo.registry import METRICS

    algorithm, space = _SEARCH[spec.subnet.family]
    sha256 = sha256 or {}
    pipeline_tag = _PIPELINE_TAGS[spec.task]
    dataset_name, dataset_type = _DATASETS[spec.task]
    settings = (training or {}).get("settings") if isinstance((training or {}).get("settings"), dict) else None
    if settings is not None:  # trained by razorzoo on the user's data: name the data, not COCO
        dataset_name = dataset_type = Path(str(settings.get("coco_ann", "custom"))).name[:100] or "custom"
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
        + (_training_section(spec, training, settings) if settings is not None else "")
    )


def _training_section(spec: "ArchSpec", training: Mapping[str, Any], settings: Mapping[str, Any]) -> str:
    """The card's account of a ``razorzoo train`` run: recipe, data, length, result (values quoted, bounded)."""
    def cell(text: str) -> str:  # stays inside its table cell: no column bar, no code-span backtick
        return text.replace("`", "'").replace("|", "/")

    def value(key: str) -> str:
        return cell(safe_repr(settings.get(key), 80))

    classes = spec.class_names or ()
    best = training.get("best_ap")
    shown = ", ".join(classes[:20]) + (f", ... ({len(classes)} in all)" if len(classes) > 20 else "")
    return (
        f"\n## Training\n\n"
        f"Trained with `razorzoo train` (recipe `{spec.recipe}`, MMYOLO's data pipeline, optimizer, schedule and "
        f"EMA):\n\n"
        f"| setting | value |\n|---|---|\n"
        f"| annotations | {value('coco_ann')} (sha256 {value('coco_ann_sha256')}) |\n"
        f"| classes | {cell(safe_repr(shown, 400))} |\n"
        f"| epochs | {value('epochs')} (weights after epoch {safe_repr(training.get('epoch'), 12)}) |\n"
        f"| batch, lr, canvas | {value('batch')} x {value('world_size')} processes, {value('lr')}, "
        f"{value('img_size')} px |\n"
        f"| best validation AP | "
        + (f"{100 * best:.2f} (epoch {safe_repr(training.get('best_epoch'), 12)})" if isinstance(best, float)
           else "not validated") + " |\n"
    )
