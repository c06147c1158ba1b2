"""A training run's settings: resolved from the arguments of a new run, or read back from the run's folder and
re-checked for ``--resume`` (docs/train.md).

The settings are plain JSON (``RUN/settings.json``): where the model came from, the data (with the annotation file's
sha256), the recipe and every override. Their ``identity`` — everything but how the run is watched and where it runs
— must match for a state file to resume it.
"""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any

from razorzoo.arch.schedules import SCHEDULES
from razorzoo.arch.spec import MAX_CLASSES, check_input_size
from razorzoo.arch.train_pipelines import TRAIN_PIPELINES
from razorzoo.bounded import InputError, check_number, load_json, read_text, safe_repr
from razorzoo.errors import RazorzooError
from razorzoo.files import check_output_dir
from razorzoo.version import __version__

__all__ = ["RUN_FILES", "MAX_EPOCHS", "MAX_BATCH", "MAX_WORKERS", "TrainingError", "resolve_settings", "identity",
           "sha256_of"]

RUN_FILES = {"settings": "settings.json", "log": "log.jsonl", "state": "state.safetensors",
             "last": "last.safetensors", "best": "best.safetensors"}
MAX_EPOCHS = 100_000
MAX_BATCH = 4096
MAX_WORKERS = 256
# settings a resumed run may change: where it runs and how it reports, not what it computes
_RESUMABLE_CHANGES = ("device", "progress", "val_ann", "val_images", "log_interval", "tensorboard")


class TrainingError(RazorzooError):
    """A run that cannot go on (non-finite loss, a resume that does not fit, ...); the state is kept."""


def identity(settings: dict[str, Any]) -> dict[str, Any]:
    """What must match for a state file to resume a run: everything but how it is watched and where it runs."""
    return {key: value for key, value in settings.items() if key not in _RESUMABLE_CHANGES}


def resolve_settings(args: dict[str, Any], *, run_dir: Path, world_size: int, on_cuda: bool) -> dict[str, Any]:
    """The run's settings from ``train()``'s arguments: a new run's, or (``args["resume"]``) the saved ones with
    the changes a resumed run may make; every other argument given must agree with them."""
    inputs = tuple(args[key] for key in ("images", "val_images") if args.get(key) is not None)
    saved = _saved_settings(run_dir, args["resume"], force=bool(args.get("force")), inputs=inputs)
    if saved is not None:
        return _resumed_settings(saved, args, run_dir, world_size)
    if args["coco_ann"] is None or args["images"] is None:
        raise RazorzooError("training needs --coco-ann (a COCO annotation file) and --images (its image folder)")
    if args["amp"] and not on_cuda:
        raise RazorzooError("--amp needs a CUDA device (automatic mixed precision is float16 on GPUs)")
    start = _start(args)
    pipeline, schedule = TRAIN_PIPELINES[start["recipe"]], SCHEDULES[start["recipe"]]
    paths = {key: str(Path(args[key]).resolve()) if args[key] is not None else None
             for key in ("coco_ann", "images", "val_ann", "val_images")}
    if (paths["val_ann"] is None) != (paths["val_images"] is None):
        raise RazorzooError("validation needs both --val-ann and --val-images")
    defaults = {"epochs": pipeline.max_epochs, "batch": pipeline.batch_size, "lr": schedule.optimizer.lr,
                "workers": min(pipeline.workers, os.cpu_count() or 1), "img_size": pipeline.img_scale[0],
                "val_interval": schedule.val_interval}
    settings = {
        "razorzoo_version": __version__, "start": start, "recipe": start["recipe"], **paths,
        "coco_ann_sha256": sha256_of(Path(paths["coco_ann"])), "num_classes": args["num_classes"],
        **{key: args[key] if args[key] is not None else default for key, default in defaults.items()},
        "warmup_iters": args["warmup_iters"], "seed": args["seed"], "world_size": world_size,
        "device": args["device"], "amp": bool(args["amp"]), "clip_grad": args["clip_grad"],
        "log_interval": args["log_interval"], "progress": args["progress"], "tensorboard": bool(args["tensorboard"]),
    }
    return _checked(settings)


def sha256_of(path: Path) -> str:
    """The file's sha256; a file that is missing, not a regular file (a fifo would block) or unreadable is one
    :class:`RazorzooError` line."""
    digest = hashlib.sha256()
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise RazorzooError(f"{safe_repr(str(path), 200)} is not a regular file")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except FileNotFoundError:
        raise RazorzooError(f"{safe_repr(str(path), 200)} does not exist") from None
    except OSError as exc:
        raise RazorzooError(f"cannot read {safe_repr(str(path), 200)}: {exc.strerror or type(exc).__name__}") from None
    return digest.hexdigest()


def _positive(value: Any, what: str, maximum: float, *, integer: bool = True) -> Any:
    number = check_number(value, what, minimum=1 if integer else 0, maximum=maximum, integer=integer)
    if not integer and number <= 0:
        raise RazorzooError(f"{what} must be positive, not {safe_repr(value, 20)}")
    return int(number) if integer else float(number)


def _checked(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` with every number in range and every name known (a new run's arguments, or a resumed run's
    ``settings.json``, which may have been edited); raises one :class:`RazorzooError` line."""
    from razorzoo.arch.recipes import RECIPES

    if settings.get("recipe") not in RECIPES or not isinstance(settings.get("start"), dict):
        raise RazorzooError(f"unknown detector recipe {safe_repr(settings.get('recipe'), 40)}")
    for key in ("coco_ann", "images"):
        if not isinstance(settings.get(key), str):
            raise RazorzooError(f"{key} must be a path")
    checked = dict(settings)
    checked["epochs"] = _positive(settings["epochs"], "epochs", MAX_EPOCHS)
    checked["batch"] = _positive(settings["batch"], "batch", MAX_BATCH)
    checked["workers"] = int(check_number(settings["workers"], "workers", minimum=0, maximum=MAX_WORKERS,
                                          integer=True))
    checked["lr"] = _positive(settings["lr"], "learning rate", 10.0, integer=False)
    checked["img_size"] = check_input_size(settings["img_size"])
    checked["val_interval"] = _positive(settings["val_interval"], "validation interval", MAX_EPOCHS)
    checked["seed"] = int(check_number(settings["seed"], "seed", minimum=0, maximum=2**62, integer=True))
    checked["log_interval"] = _positive(settings["log_interval"], "log interval", 10**9)
    for key, what, limit in (("warmup_iters", "warm-up iterations", 10**9), ("clip_grad", "gradient clip", 1e9),
                             ("num_classes", "--num-classes", MAX_CLASSES)):
        if settings.get(key) is not None:
            checked[key] = _positive(settings[key], what, limit, integer=key != "clip_grad")
    return checked



def _start(args: dict[str, Any]) -> dict[str, Any]:
    """What the run starts from, recorded so it can be rebuilt: a model source, or a custom subnet."""
    if args["model"] is not None:
        if args["backbone_weights"] is not None:
            raise RazorzooError("--backbone-weights is for a custom --subnet; a model brings its own weights")
        from razorzoo.loading import source_kind

        kind, value = source_kind(args["model"])  # a file is recorded by its absolute path, for --resume
        source: Any = Path(value).resolve() if kind == "file" else value
        recipe = _model_recipe(source, args)
        return {"model": str(source), "is_path": kind == "file", "subnet": args["subnet"],
                "detector": args["detector"], "recipe": recipe}
    if args["subnet"] is None or args["detector"] is None or args["backbone_weights"] is None:
        raise RazorzooError("start from a model (NAME, FILE or hf-hub:ID), or from a custom subnet with --subnet "
                            "YAML --detector RECIPE --backbone-weights SUPERNET_OR_SUBNET.pth")
    from razorzoo.arch.subnet import load_subnet
    from razorzoo.builder import resolve_spec

    subnet = load_subnet(args["subnet"])
    spec = resolve_spec(subnet.to_yaml(), "detection", detector=args["detector"])
    weights = Path(args["backbone_weights"]).resolve()
    if not weights.is_file():
        raise RazorzooError(f"--backbone-weights {safe_repr(str(weights))} is not a file")
    return {"model": None, "subnet_yaml": subnet.to_yaml(), "recipe": spec.recipe,
            "backbone_weights": str(weights), "backbone_weights_sha256": sha256_of(weights)}

def _model_recipe(source: Any, args: dict[str, Any]) -> str:
    """The detector recipe of the starting model, read without loading it where the name says it."""
    from razorzoo.builder import resolve_spec
    from razorzoo.loading import converted_file, source_kind
    from razorzoo.weights.convert import read_spec

    if args["subnet"] is not None:  # an OpenMMLab .pth with its subnet
        return resolve_spec(args["subnet"], "detection", detector=args["detector"]).recipe
    kind, value = source_kind(source)
    if kind == "name":
        from razorzoo.zoo.registry import get_card

        recipe = get_card(value).recipe  # None for a classifier or supernet entry
    else:
        recipe = read_spec(converted_file(source)).recipe
    if recipe is None:
        raise RazorzooError(f"{safe_repr(str(source))} is not a detector; training needs one (e.g. "
                            "yolov6s-attentive_a6)")
    return recipe

def _saved_settings(run_dir: Path, resume: bool, *, force: bool = False,
                    inputs: tuple[Any, ...] = ()) -> dict[str, Any] | None:
    """The settings of the run in ``run_dir`` for ``--resume``; for a new run, None once the folder is fit for
    one (new or empty, or ``force``; never one of the data's folders)."""
    settings_file = run_dir / RUN_FILES["settings"]
    has_run = settings_file.is_file()
    if resume:
        if not has_run:
            raise RazorzooError(f"--resume: {safe_repr(str(run_dir))} holds no training run (no settings.json)")
        try:
            saved = load_json(read_text(settings_file, limit=1 << 20, what="settings.json"),
                              what=str(settings_file))
        except (OSError, InputError):
            raise RazorzooError(f"--resume: {safe_repr(str(settings_file))} is unreadable") from None
        if not isinstance(saved, dict) or "start" not in saved:
            raise RazorzooError(f"--resume: {safe_repr(str(settings_file))} is not a razorzoo run's settings")
        return saved
    if has_run:
        raise RazorzooError(f"{safe_repr(str(run_dir))} already holds a training run: pass --resume to continue "
                            "it, or choose another output folder")
    check_output_dir(run_dir, what="-o", inputs=inputs)  # a writable folder (or creatable), not a data folder
    if run_dir.exists() and any(run_dir.iterdir()) and not force:
        raise RazorzooError(f"output {safe_repr(str(run_dir))} exists and is not an empty folder; training "
                            "writes a new run into an empty or new folder (--force: write beside what is there)")
    return None


def _resumed_settings(saved: dict[str, Any], args: dict[str, Any], run_dir: Path, world_size: int) -> dict[str, Any]:
    """The saved settings, with the arguments a resumed run may change; any other argument must agree."""
    given = {"epochs": args["epochs"], "batch": args["batch"], "workers": args["workers"], "lr": args["lr"],
             "img_size": args["img_size"], "warmup_iters": args["warmup_iters"],
             "num_classes": args["num_classes"], "amp": args["amp"] or None, "clip_grad": args["clip_grad"],
             "val_interval": args["val_interval"]}
    for key in ("coco_ann", "images"):
        if args[key] is not None:
            given[key] = str(Path(args[key]).resolve())
    if args["seed"] != 0:
        given["seed"] = args["seed"]
    for key, value in given.items():
        if value is not None and saved.get(key) != value:
            raise TrainingError(f"--resume: this run was started with {key}={safe_repr(saved.get(key), 80)}, "
                                f"not {safe_repr(value, 80)}; resume it with its own settings or start a new run")
    start = saved.get("start") or {}
    if args["model"] is not None:
        from razorzoo.loading import source_kind

        kind, value = source_kind(args["model"])
        if (str(Path(value).resolve()) if kind == "file" else value) != start.get("model"):
            raise TrainingError(f"--resume: this run started from {safe_repr(start.get('model'), 120)}, not "
                                f"{safe_repr(value, 120)}; leave the model out to continue it")
    if args["subnet"] is not None and start.get("subnet_yaml") is not None:
        from razorzoo.arch.subnet import load_subnet

        if load_subnet(args["subnet"]).to_yaml() != start["subnet_yaml"]:
            raise TrainingError("--resume: --subnet is not the subnet this run started from; leave it out")
    if saved.get("world_size") != world_size:
        raise TrainingError(f"--resume: this run was trained by {saved.get('world_size')} process(es), not "
                            f"{world_size}; batches and shards would differ")
    resumed = dict(saved)
    resumed.update(device=args["device"], progress=args["progress"], log_interval=args["log_interval"],
                   tensorboard=bool(args["tensorboard"]))
    if args["val_ann"] is not None or args["val_images"] is not None:
        if args["val_ann"] is None or args["val_images"] is None:
            raise RazorzooError("validation needs both --val-ann and --val-images")
        resumed.update(val_ann=str(Path(args["val_ann"]).resolve()),
                       val_images=str(Path(args["val_images"]).resolve()))
    try:  # settings.json may have been edited: the same checks as for a new run
        return _checked(resumed)
    except (RazorzooError, KeyError, TypeError) as exc:
        raise TrainingError(f"--resume: {safe_repr(str(run_dir / RUN_FILES['settings']), 200)} is not usable "
                            f"({safe_repr(str(exc), 160)}); start a new run") from None
