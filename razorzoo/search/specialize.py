"""``razorzoo specialize``: search a subnet of the AttentiveNAS or OFA supernet for a FLOPs, params or latency budget
on this machine, calibrate its BatchNorms, and write a directory that loads, verifies and pushes as is.

supernet card -> supernet checkpoint (checked to be one) -> evolution search (fitness: top-1 on the user's labelled
images after BN calibration on the user's calibration images; constraint: exact FLOPs/params or the device
profile's latency) -> Pareto front -> finalists re-timed end to end -> ``OUT/`` with ``subnet.yaml``,
``model.safetensors`` (calibrated, provenance in its metadata), ``README.md``, ``specialize.json``,
``pareto.json``/``pareto.png``, ``search_state.json`` and, for latency, ``device_profile.json``.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from razorzoo import __version__
from razorzoo.arch.recipes import CLASSIFIER_PREPROCESS, ClassifierPreprocess
from razorzoo.bounded import check_number, safe_repr
from razorzoo.constants import MAX_BATCH
from razorzoo.errors import CheckpointError, RazorzooError
from razorzoo.files import check_output_file, check_run_dir, mark_run_dir, write_bytes_atomic, write_json_atomic
from razorzoo.search.costs import CostTable
from razorzoo.search.evolution import ChoiceSpace, EvolutionSearch, Genome, SearchSettings
from razorzoo.search.latency import BACKENDS, DeviceProfile, threads_limit, time_model
from razorzoo.wording import count
from razorzoo.zoo.registry import pareto_front

__all__ = ["Constraint", "SpecializeResult", "specialize", "read_supernet", "search_preprocess", "OUTPUT_FILES"]

OUTPUT_FILES = {"subnet": "subnet.yaml", "weights": "model.safetensors", "card": "README.md",
                "summary": "specialize.json", "pareto": "pareto.json", "plot": "pareto.png",
                "state": "search_state.json", "profile": "device_profile.json"}
BASE_ENTRIES = {"attentive": "attentive_a6", "ofa": "ofa_lat31"}  # what `razorzoo push --base` takes per family
FINALISTS = 3
MIN_RESOLUTION, MAX_RESOLUTION = 32, 1024  # input sizes a search may measure at
MAX_CALIB_IMAGES = 100_000  # calibration images are held in memory as one tensor
_UNITS = {"latency": {"ms": 1.0, "s": 1e3, "": 1.0}, "flops": {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9},
          "params": {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9}}
_NUMBER = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


@dataclass(frozen=True)
class Constraint:
    """An upper bound on one cost: ``flops`` (multiply-accumulates), ``params`` or ``latency`` (ms)."""

    metric: str
    limit: float

    @classmethod
    def parse(cls, metric: str, text: str) -> "Constraint":
        """``Constraint.parse("flops", "300M")``, ``("params", "5M")``, ``("latency", "12ms")``."""
        units = _UNITS.get(metric)
        match = _NUMBER.match(str(text))
        if units is None:
            raise RazorzooError(f"unknown constraint {safe_repr(metric)}; expected latency, flops or params")
        if match is None or match.group(2).upper() not in {u.upper() for u in units}:
            examples = {"latency": "12ms", "flops": "300M", "params": "5M"}[metric]
            raise RazorzooError(f"--{metric} {safe_repr(text)} is not a {metric} budget; write e.g. {examples}")
        unit = next(u for u in units if u.upper() == match.group(2).upper())
        return cls(metric, float(match.group(1)) * units[unit])

    def __str__(self) -> str:
        return f"{self.metric}<={_format(self.metric, self.limit)}"


def _format(metric: str, value: float) -> str:
    return f"{value:.3g}ms" if metric == "latency" else f"{value / 1e6:.4g}M"


@dataclass
class SpecializeResult:
    """What :func:`specialize` found and wrote."""

    out: Path
    subnet: Any
    top1: float
    flops: int
    params: int
    latency_ms: float | None  # measured end to end
    predicted_latency_ms: float | None
    summary: dict[str, Any] = field(default_factory=dict)
    budget_met: bool = True  # False: no finalist met the latency budget when timed end to end (the card says so)


def read_supernet(supernet: str, weights: str | os.PathLike | None = None) -> tuple[str, dict, dict[str, str]]:
    """``(family, state dict without 'architecture.', source)`` of a supernet card, downloaded (cached) or read
    from ``weights``.

    Raises:
        RazorzooError: ``supernet`` is not a supernet card. CheckpointError: the file is not that supernet.
    """
    from razorzoo.storage.fetch import sha256_of_file
    from razorzoo.weights.checkpoint import read_checkpoint
    from razorzoo.weights.extract import supernet_state_dict_shapes
    from razorzoo.zoo.registry import get_card, list_models

    card = get_card(supernet)
    if card.task != "supernet" or card.family not in BASE_ENTRIES:
        searchable = [n for n in list_models(task="supernet") if get_card(n).family in BASE_ENTRIES]
        raise RazorzooError(f"{card.name!r} is not a supernet to search; use one of {', '.join(searchable)}")
    if weights is None:
        from razorzoo.loading import download

        path, url = download(card.name), card.weights.url
    else:
        path, url = Path(weights), ""
    state_dict = {k.removeprefix("architecture."): v for k, v in read_checkpoint(path).state_dict.items()}
    for key, shape in supernet_state_dict_shapes(card.family).items():
        if key.endswith((".mask", "num_batches_tracked")):
            continue  # recomputed by extract_subnet; converted supernets often lack them
        have = state_dict.get(key)
        if have is None or tuple(have.shape) != tuple(shape):
            found = "lacks it" if have is None else f"has shape {tuple(have.shape)}"
            raise CheckpointError(f"{safe_repr(str(path))} is not the {card.name} checkpoint: the supernet has "
                                  f"{key!r} of shape {tuple(shape)}, the file {found}; pass the supernet's .pth")
    return card.family, state_dict, {"name": card.name, "url": url, "sha256": sha256_of_file(path)}


def _build(subnet: Any) -> torch.nn.Module:
    """The subnet's ImageNet classifier (weights zero-filled)."""
    from razorzoo.arch.spec import ArchSpec
    from razorzoo.builder import build_model

    return build_model(ArchSpec("classification", subnet))


class _Evaluator:
    """Scores and costs of genomes, each computed once."""

    def __init__(self, space: ChoiceSpace, state_dict: dict, calib: torch.Tensor, val: torch.Tensor,
                 labels: torch.Tensor, resolution: int, profile: DeviceProfile | None, batch_size: int) -> None:
        self.space, self.state_dict, self.calib, self.val, self.labels = space, state_dict, calib, val, labels
        self.resolution, self.input_shape = resolution, (1, 3, resolution, resolution)
        self.profile, self.batch_size = profile, batch_size
        self.table = CostTable()  # FLOPs/params by units: no forward pass per candidate
        self._costs: dict[Genome, dict[str, float]] = {}
        self.results: dict[Genome, dict[str, float]] = {}

    def inputs_digest(self) -> str:
        """sha256 of the calibration and validation pixels and the labels: what every score depends on besides the
        weights (a resumed search must see the same images, prepared the same way)."""
        digest = hashlib.sha256()
        for tensor in (self.calib, self.val, self.labels):
            digest.update(str(tuple(tensor.shape)).encode())
            digest.update(memoryview(tensor.contiguous().numpy()).cast("B"))
        return digest.hexdigest()

    def costs(self, genome: Genome) -> dict[str, float]:
        if genome not in self._costs:
            subnet = self.space.subnet(genome)
            counted = self.table.costs(subnet, self.resolution)
            costs = {"flops": counted.flops, "params": counted.params}
            if self.profile is not None:
                costs["latency"] = self.profile.predict(_build(subnet), self.input_shape)
            self._costs[genome] = costs
        return self._costs[genome]

    def calibrated_model(self, genome: Genome) -> torch.nn.Module:
        from razorzoo.search.calibrate import calibrate_bn
        from razorzoo.weights.extract import extract_subnet

        subnet = self.space.subnet(genome)
        model = _build(subnet)
        model.load_state_dict(extract_subnet(self.state_dict, subnet), strict=True)
        return calibrate_bn(model, self.calib.split(self.batch_size), progress=False)  # one per candidate: no bars

    @torch.no_grad()
    def score(self, genome: Genome) -> tuple[float, float]:
        """(top-1 %, minus the mean cross-entropy): top-1 as upstream, the loss only breaks ties."""
        model = self.calibrated_model(genome)
        logits = torch.cat([model(batch) for batch in self.val.split(self.batch_size)])
        top1 = (logits.argmax(1) == self.labels).double().mean().item() * 100
        loss = F.cross_entropy(logits.double(), self.labels).item()
        self.results[genome] = {"top1": top1, "loss": loss, **self.costs(genome)}
        return (top1, -loss)


def specialize(
    supernet: str,
    constraint: Constraint,
    *,
    calib: str | os.PathLike,
    val: str | os.PathLike,
    out: str | os.PathLike,
    weights: str | os.PathLike | None = None,
    population: int = 50,
    generations: int = 20,
    seed: int = 0,
    resolution: int = 224,
    calib_images: int = 2000,
    batch_size: int = 32,
    backend: str = "torch",
    threads: int = 1,
    profile: str | os.PathLike | None = None,
    resume: bool = False,
    force: bool = False,
    stop_after: int | None = None,
    progress: Callable[[str], None] = lambda message: None,
) -> SpecializeResult | None:
    """Search, calibrate and write ``out``. Returns ``None`` when stopped by ``stop_after`` (resumable).

    Args:
        supernet: ``"attentive_supernet"`` or ``"ofa_supernet"`` (downloaded once), or with ``weights=`` a local
            copy of that supernet's checkpoint.
        constraint: the budget every candidate must meet (:meth:`Constraint.parse`).
        calib: image folder for BN calibration (first ``calib_images`` images, sorted by path).
            Images are prepared by :func:`search_preprocess` (the supernet's upstream test pipeline at ``resolution``).
        val: labelled images, as :func:`razorzoo.evaluation.imagenet.read_imagenet` reads a folder: class folders
            named by ImageNet class index (``281_tabby/``), or all 1000 ImageNet class folders; fitness is top-1.
        out: output directory: new, empty or an earlier ``specialize`` output (checked before anything is read or
            downloaded), else refused unless ``force``. resume: continue ``out/search_state.json``.
        population, generations, seed: the evolution (MMRazor's proportions for top-k, mutation, crossover).
        resolution: input size the candidates are measured and evaluated at.
        backend, threads, profile: latency measurement; ``profile`` is a device profile to reuse and extend
            (default ``out/device_profile.json``).
    """
    check_number(resolution, "resolution", minimum=MIN_RESOLUTION, maximum=MAX_RESOLUTION, integer=True)
    check_number(calib_images, "calib_images", minimum=1, maximum=MAX_CALIB_IMAGES, integer=True)
    check_number(batch_size, "batch_size", minimum=1, maximum=MAX_BATCH, integer=True)
    inputs = [path for path in (calib, val, weights) if isinstance(path, (str, os.PathLike))]
    check_run_dir(out, command="specialize", force=force, inputs=inputs)
    if profile is not None:
        check_output_file(profile, what="profile", inputs=inputs)
    with threads_limit(threads):  # more intra-op threads than free cores makes every op wait for the slowest
        return _specialize(supernet, constraint, calib=calib, val=val, out=Path(out), weights=weights,
                           settings=SearchSettings.for_population(population, generations, seed),
                           resolution=resolution, calib_images=calib_images, batch_size=batch_size, backend=backend,
                           threads=threads, profile=profile, resume=resume, stop_after=stop_after, progress=progress)


def _specialize(supernet: str, constraint: Constraint, *, calib, val, out: Path, weights, settings: SearchSettings,
                resolution: int, calib_images: int, batch_size: int, backend: str, threads: int, profile, resume: bool,
                stop_after: int | None, progress: Callable[[str], None]) -> SpecializeResult | None:
    from razorzoo.detection.transforms import ClassifierTransform
    from razorzoo.evaluation.imagenet import read_imagenet
    from razorzoo.search.calibrate import calibration_images

    _matplotlib()  # the Pareto plot is written last: a missing extra must not cost a whole search
    if backend not in BACKENDS:
        raise RazorzooError(f"unknown latency backend {safe_repr(backend)}; available: {', '.join(BACKENDS)}")
    family, state_dict, source = read_supernet(supernet, weights)
    space = ChoiceSpace.for_family(family)
    calib_paths = calibration_images(calib)[:calib_images]
    val_samples, _ = read_imagenet(val)
    val_paths = [path for path, _ in val_samples]
    profile_path = Path(profile) if profile is not None else out / OUTPUT_FILES["profile"]
    device = None
    if constraint.metric == "latency":
        device = DeviceProfile.load(profile_path) if profile_path.is_file() else DeviceProfile(backend, threads)
        if (device.backend, device.threads) != (backend, threads):
            raise RazorzooError(f"device profile {safe_repr(str(profile_path))} was measured with {device.backend} "
                                f"and {device.threads} threads, not {backend} and {threads}")
    progress(f"reading {count(len(calib_paths), 'calibration image')} and {count(len(val_paths), 'validation image')}"
             f" at {resolution}px")
    transform = ClassifierTransform(search_preprocess(family, resolution))
    evaluator = _Evaluator(space, state_dict, transform(calib_paths), transform(val_paths),
                           torch.tensor([label for _, label in val_samples]), resolution, device, batch_size)
    smallest = evaluator.costs(space.smallest())[constraint.metric]
    if smallest > constraint.limit:
        raise RazorzooError(f"no {family} subnet meets {constraint} at {resolution}x{resolution}: the smallest "
                            f"needs {_format(constraint.metric, smallest)}; raise the budget")
    out.mkdir(parents=True, exist_ok=True)
    mark_run_dir(out, "specialize")
    search = EvolutionSearch(space, settings, score=evaluator.score,
                             feasible=lambda g: evaluator.costs(g)[constraint.metric] <= constraint.limit,
                             state_path=out / OUTPUT_FILES["state"], progress=progress,
                             describe=lambda g: _describe(evaluator.results[g], constraint),
                             key={"supernet": source["name"], "supernet_sha256": source["sha256"],
                                  "constraint": str(constraint), "limit": constraint.limit, "resolution": resolution,
                                  "calib": len(calib_paths), "val": len(val_paths), "batch_size": batch_size,
                                  "images_sha256": evaluator.inputs_digest(),
                                  # latencies, hence feasibility, depend on what they are measured with
                                  "latency": [backend, threads] if device is not None else None})
    if resume:
        search.resume(out / OUTPUT_FILES["state"])
        for genome in search.scores:  # scores are saved; the per-candidate metrics are recomputed from them
            evaluator.results[genome] = {**_unscored(search.scores[genome]), **evaluator.costs(genome)}
    try:
        top_k = search.run(stop_after=stop_after)
    finally:
        if device is not None:
            device.save(profile_path)
    if search.generation < settings.generations:
        return None
    return _write_output(out, evaluator, top_k[0], constraint, settings, source, family, resolution,
                         calib_paths, calib, device, profile_path, threads, backend, progress)


def search_preprocess(family: str, resolution: int) -> ClassifierPreprocess:
    """The family's upstream ImageNet test pipeline (:data:`~razorzoo.arch.recipes.CLASSIFIER_PREPROCESS`) at the
    search resolution: crop ``resolution``, short side in the same proportion; the classifiers' own at 224."""
    return CLASSIFIER_PREPROCESS[family].at_crop(resolution)


def _describe(result: dict[str, float], constraint: Constraint) -> str:
    """A scored candidate in a progress line: what the numbers are, not bare scores."""
    cost = _format(constraint.metric, result[constraint.metric])
    what = "predicted " if constraint.metric == "latency" else ""
    return (f"top-1 {result['top1']:.2f}% on your validation images (loss {result['loss']:.3f}), "
            f"{what}{constraint.metric} {cost}")


def _unscored(score: tuple) -> dict[str, float]:
    return {"top1": score[0], "loss": -score[1]}


def _write_output(out: Path, evaluator: _Evaluator, best: Genome, constraint: Constraint, settings: SearchSettings,
                  source: dict[str, str], family: str, resolution: int, calib_paths: list, calib: Any,
                  device: DeviceProfile | None, profile_path: Path, threads: int, backend: str,
                  progress: Callable[[str], None]) -> SpecializeResult:
    space = evaluator.space
    rows = [{"subnet": space.to_json(g), **r, "feasible": r[constraint.metric] <= constraint.limit}
            for g, r in evaluator.results.items()]
    front = pareto_front(rows, constraint.metric, "top1")
    ranked = lambda g: (evaluator.results[g]["top1"], -evaluator.results[g]["loss"])  # noqa: E731 - the search's score
    finalists = _finalists(front, best, space, ranked)
    measured: dict[Genome, float] = {}
    for i, genome in enumerate(finalists, start=1):  # the block sum misses the glue between blocks: re-time them
        measured[genome] = time_model(_build(space.subnet(genome)), evaluator.input_shape,
                                      backend=backend, threads=threads)
        verdict = ""
        if constraint.metric == "latency":
            verdict = f" ({'within' if measured[genome] <= constraint.limit else 'over'} {constraint})"
        progress(f"finalist {i}/{len(finalists)}: {_describe(evaluator.results[genome], constraint)}; "
                 f"measured {measured[genome]:.2f} ms end to end{verdict}")
    chosen, budget = _choose(finalists, best, measured, evaluator, constraint, ranked)
    for row in rows:
        genome = space.from_json(row["subnet"])
        row["measured_latency"] = measured.get(genome)
        row["pareto"] = any(r is row for r in front)
        row["chosen"] = genome == chosen
    write_json_atomic(out / OUTPUT_FILES["pareto"], {"constraint": str(constraint), "cost": constraint.metric,
                                                      "candidates": rows})
    _plot(out / OUTPUT_FILES["plot"], rows, constraint)

    result = evaluator.results[chosen]
    subnet = space.subnet(chosen)
    model = evaluator.calibrated_model(chosen)
    summary = {
        "razorzoo_version": __version__, "supernet": source, "family": family, "constraint": str(constraint),
        "resolution": resolution, "budget": budget,
        "search": {"algorithm": "evolution (MMRazor EvolutionSearchLoop)", **vars(settings)},
        "calibration": {"images": len(calib_paths), "source": os.path.basename(os.path.abspath(calib)),
                        "method": "exact mean / unbiased variance, batch statistics while calibrating",
                        "batch_size": evaluator.batch_size},
        "validation": {"images": len(evaluator.labels), "top1": result["top1"], "loss": result["loss"]},
        "flops": result["flops"], "params": result["params"],
        "latency": {"backend": backend, "threads": threads, "measured_ms": measured[chosen],
                    "predicted_ms": result.get("latency"),
                    "profile": profile_path.name if device is not None else None},
    }
    _write_weights(out / OUTPUT_FILES["weights"], model, subnet, source, summary)
    write_bytes_atomic(out / OUTPUT_FILES["subnet"], subnet.to_yaml().encode())
    write_json_atomic(out / OUTPUT_FILES["summary"], summary)
    write_bytes_atomic(out / OUTPUT_FILES["card"], _card(summary, out).encode())
    return SpecializeResult(out, subnet, result["top1"], int(result["flops"]), int(result["params"]),
                            measured[chosen], result.get("latency"), summary, budget_met=budget["met"])


def _finalists(front: list[dict[str, Any]], best: Genome, space: ChoiceSpace,
               ranked: Callable[[Genome], tuple]) -> list[Genome]:
    """The subnets timed end to end: the search's best and the feasible subnets of the Pareto front, most accurate
    first, at most :data:`FINALISTS`. (A front row can be over a latency budget after a resume: latencies are
    predicted again from the device profile, which may have been measured further in between.)"""
    return sorted({space.from_json(r["subnet"]) for r in front if r["feasible"]} | {best}, key=ranked,
                  reverse=True)[:FINALISTS]


def _choose(finalists: list[Genome], best: Genome, measured: dict[Genome, float], evaluator: _Evaluator,
            constraint: Constraint, ranked: Callable[[Genome], tuple]) -> tuple[Genome, dict[str, Any]]:
    """The subnet to write and its budget re-checked on the final measurement: FLOPs and params counted again on
    the whole network; latency timed end to end, where the most accurate finalist *within* the budget wins (the
    search only had the block table's prediction). When no finalist meets a latency budget, the best is written and
    ``met`` is false: the card says by how much it misses."""
    from razorzoo.models.flops import count_flops

    if constraint.metric == "latency":
        within = [g for g in finalists if measured[g] <= constraint.limit]
        chosen = max(within, key=ranked) if within else best
        value, how = measured[chosen], f"timed end to end ({evaluator.input_shape[2]}px, batch 1)"
    else:
        chosen = best
        with torch.device("meta"):
            report = count_flops(_build(evaluator.space.subnet(chosen)), evaluator.input_shape)
        value, how = float(getattr(report, constraint.metric)), "counted on the whole network"
    return chosen, {"constraint": str(constraint), "metric": constraint.metric, "limit": constraint.limit,
                    "measured": value, "measured_by": how, "met": value <= constraint.limit}


def _write_weights(path: Path, model: torch.nn.Module, subnet: Any, source: dict[str, str],
                   summary: dict[str, Any]) -> None:
    """The calibrated weights as a razorzoo ``.safetensors`` (``convert_checkpoint`` checks and lays them out),
    with the calibration and search provenance in its metadata."""
    from razorzoo.arch.spec import ArchSpec
    from razorzoo.weights.checkpoint import Checkpoint
    from razorzoo.weights.convert import convert_checkpoint

    provenance = {"razorzoo_calibration": json.dumps(summary["calibration"], sort_keys=True),
                  "razorzoo_specialize": json.dumps(summary, sort_keys=True)}
    convert_checkpoint(Checkpoint(model.state_dict(), "state-dict"), ArchSpec("classification", subnet), path,
                       source_url=source["url"], source_sha256=source["sha256"], metadata=provenance)


def _matplotlib() -> Any:
    """matplotlib, for the Pareto plot (the ``search`` extra)."""
    try:
        import matplotlib
    except ModuleNotFoundError:
        raise RazorzooError("razorzoo specialize draws its Pareto plot with matplotlib, which is not installed: "
                            "pip install 'razorzoo[search]'") from None
    return matplotlib


def _plot(path: Path, rows: list[dict[str, Any]], constraint: Constraint) -> None:
    _matplotlib().use("Agg")
    import matplotlib.pyplot as plt

    scale, unit = (1.0, "ms (device profile)") if constraint.metric == "latency" else (1e6, "M")
    label = {"latency": "latency", "flops": "FLOPs (MACs)", "params": "parameters"}[constraint.metric]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.scatter([r[constraint.metric] / scale for r in rows], [r["top1"] for r in rows], s=12, c="#999999",
               label="evaluated")
    front = sorted((r for r in rows if r["pareto"]), key=lambda r: r[constraint.metric])
    ax.plot([r[constraint.metric] / scale for r in front], [r["top1"] for r in front], "o-", c="#d62728",
            label="Pareto front")
    for row in rows:
        if row["chosen"]:
            ax.scatter([row[constraint.metric] / scale], [row["top1"]], s=160, marker="*", c="#2ca02c",
                       edgecolors="black", linewidths=0.5, zorder=3, label=f"chosen: top-1 {row['top1']:.2f}%")
    ax.axvline(constraint.limit / scale, ls="--", c="#1f77b4", label=str(constraint))
    ax.set_xlabel(f"{label} [{unit}]")
    ax.set_ylabel("top-1 on your validation images [%]")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())


def _card(summary: dict[str, Any], out: Path) -> str:
    """A model card with the search's provenance; ``razorzoo push`` writes the Hub card from the same files."""
    latency = summary["latency"]
    predicted = f"{latency['predicted_ms']:.2f} ms" if latency["predicted_ms"] is not None else "n/a"
    budget = summary["budget"]
    value = _format(budget["metric"], budget["measured"])
    over = _format(budget["metric"], budget["measured"] - budget["limit"])
    verdict = (f"met: {value} {budget['measured_by']}" if budget["met"] else
               f"**missed**: {value} {budget['measured_by']}, over by {over} (no finalist met it when measured; "
               "raise the budget or search again)")
    base = BASE_ENTRIES[summary["family"]]
    top1 = summary["validation"]["top1"]
    metric = f" --metric top1={top1:.2f}" if top1 > 0 else ""  # the card schema takes percentages in (0, 100]
    return (
        f"# {out.name}: {summary['family']} subnet specialized with razorzoo\n\n"
        f"Searched in `{summary['supernet']['name']}` for `{summary['constraint']}` at "
        f"{summary['resolution']}x{summary['resolution']}; weights are the supernet's, sliced (no retraining), with "
        f"BatchNorm statistics recalibrated on {count(summary['calibration']['images'], 'image')} of "
        f"`{summary['calibration']['source']}`.\n\n"
        "| | |\n|---|---|\n"
        f"| supernet | `{summary['supernet']['name']}` (sha256 `{summary['supernet']['sha256'][:16]}…`) |\n"
        f"| budget `{budget['constraint']}` | {verdict} |\n"
        f"| search | evolution, population {summary['search']['population']}, "
        f"{count(summary['search']['generations'], 'generation')}, top-k {summary['search']['top_k']}, mutation prob "
        f"{summary['search']['mutate_prob']}, seed {summary['search']['seed']} |\n"
        f"| top-1 on your validation images | {summary['validation']['top1']:.2f}% of "
        f"{count(summary['validation']['images'], 'image')} |\n"
        f"| FLOPs (multiply-accumulates) | {summary['flops'] / 1e6:.2f} M at {summary['resolution']}px |\n"
        f"| params | {summary['params'] / 1e6:.3f} M |\n"
        f"| latency ({latency['backend']}, {latency['threads']} threads, batch 1) | {latency['measured_ms']:.2f} ms "
        f"measured end to end; {predicted} predicted by the device profile |\n\n"
        "## How to load\n\n```python\nfrom pathlib import Path\nimport razorzoo\n\n"
        f"model = razorzoo.load_classifier(Path(\"{out.name}/model.safetensors\"))\n```\n\n"
        "## How to publish\n\n```bash\n"
        f"razorzoo push ORG/NAME --subnet {out.name}/subnet.yaml --weights {out.name}/model.safetensors "
        f"--base {base}{metric} --constraint '{summary['constraint']}'\n"
        "```\n\n"
        "## Limitations\n\n"
        "- No retraining: accuracy is the supernet's, and only as good an estimate as your validation images.\n"
        "- The top-1 above is on your images, not ImageNet's validation set.\n"
        "- Latency was measured on the machine that ran the search; elsewhere, measure again.\n"
    )
