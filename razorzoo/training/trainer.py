"""``razorzoo.train``: train or fine-tune a detector on a COCO-format dataset with its MMYOLO recipe (docs/train.md).

A run is a folder (``RUN/``) that holds everything about it:

* ``settings.json`` — the resolved settings: where the model came from, the data, the recipe's pipeline, optimizer
  and schedule with every override, the class names. ``--resume`` continues only a run with the same settings.
* ``log.jsonl`` — one JSON object per line: training records (every ``log_interval`` iterations and at each epoch's
  end: losses, learning rate, images/s) and validation records (COCO AP).
* ``last.safetensors`` / ``best.safetensors`` — the EMA weights (what upstream evaluates and publishes) after the
  latest epoch and at the best validation AP, as razorzoo converted files: ``load_detector(Path(...))`` loads them,
  ``razorzoo push`` publishes them.
* ``state.safetensors`` — the resumable state (raw weights, EMA, optimizer, progress, RNG; no pickle). It is written
  at each epoch's end and when the run stops early (Ctrl-C, a non-finite loss), always between iterations, so
  ``--resume`` continues exactly where the run was: the same weights as a run that was never interrupted.

One iteration follows MMYOLO's ``EpochBasedTrainLoop`` with the recipe's hooks: set the learning rate
(``razorzoo.training.optim``), normalise the uint8 batch like the data preprocessor, ``Detector.loss``, backward,
(optional gradient clipping), step, update the EMA. Validation (``razorzoo.evaluation.coco``, on the EMA weights)
runs every ``val_interval`` epochs, every epoch once the stage-2 pipeline runs, and after the last epoch.
"""
from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from razorzoo.arch.schedules import SCHEDULES, TrainSchedule, YOLOv5Schedule
from razorzoo.arch.train_pipelines import TRAIN_PIPELINES
from razorzoo.bounded import safe_repr
from razorzoo.detection.transforms import normalize
from razorzoo.errors import RazorzooError
from razorzoo.files import write_json_atomic
from razorzoo.training.distributed import World, join, leave, sync_batchnorm
from razorzoo.training.ema import ExpMomentumEMA
from razorzoo.training.optim import LearningRates, build_optimizer, parameters_with_grad
from razorzoo.training.settings import RUN_FILES, TrainingError, identity, resolve_settings, sha256_of
from razorzoo.training.state import Progress, StateError, load_state, save_state

__all__ = ["train", "TrainResult", "TrainingError", "TrainingInterrupted", "RUN_FILES"]


class TrainingInterrupted(RazorzooError):
    """Ctrl-C: the run stopped between iterations and saved a state ``--resume`` continues from."""


@dataclass(frozen=True)
class TrainResult:
    """Where a finished run left its files, and its best validation AP (None without validation data)."""

    run_dir: Path
    last: Path
    best: Path | None
    best_ap: float | None
    epochs: int


def train(model: str | os.PathLike | None = None, *, coco_ann: str | os.PathLike | None = None,
          images: str | os.PathLike | None = None, output: str | os.PathLike,
          val_ann: str | os.PathLike | None = None, val_images: str | os.PathLike | None = None,
          subnet: Any = None, detector: str | None = None, backbone_weights: str | os.PathLike | None = None,
          epochs: int | None = None, batch: int | None = None, workers: int | None = None, lr: float | None = None,
          img_size: int | None = None, warmup_iters: int | None = None, num_classes: int | None = None,
          seed: int = 0, device: str = "cpu",
          resume: bool = False,
          amp: bool = False, clip_grad: float | None = None, val_interval: int | None = None,
          log_interval: int = 50, tensorboard: bool = False, force: bool = False,
          progress: bool | None = None) -> TrainResult:
    """Train a detector on a COCO-format dataset with its recipe (docs/train.md).

    Args:
        model: where to start: a registry detector (``"yolov6s-attentive_a6"``), a converted ``.safetensors`` or an
            ``hf-hub:`` id — fine-tuning; or None with ``subnet`` + ``detector`` + ``backbone_weights``: a custom
            searched subnet (its weights sliced from a supernet or taken from a subnet checkpoint) in a recipe's
            detector, neck and head initialised as upstream does.
        coco_ann, images: the training set. val_ann, val_images: validation set (COCO AP on the EMA weights).
        output: the run folder (new or empty, ``force=True`` to write beside other files; ``resume=True``
            continues the run in it). Never a folder the data is read from.
        epochs, batch, workers, lr: override the recipe's (the schedule's shape follows ``epochs`` as the config's
            formulas do). img_size: the training canvas (default the recipe's, 640 or 960): every size in the
            pipeline scales with it, and the trained model predicts at it. warmup_iters: the learning-rate warm-up
            (default the recipe's: at least 1000 iterations, longer than a short fine-tune). num_classes: checked
            against the dataset's categories, which decide the head's classes.
        seed: data order and augmentation. device: ``"cpu"``, ``"cuda"``, ``"cuda:K"``; under ``torchrun`` every
            process trains a shard of each batch (docs/train.md). amp: float16 autocast on CUDA.
        clip_grad: clip the gradients' total norm (none of the recipes does). val_interval: validate every this many
            epochs (the recipe's default). log_interval: iterations between training log records.
        tensorboard: also write the log's numbers as TensorBoard scalars to ``RUN/tensorboard`` (the
            ``razorzoo[tensorboard]`` extra).

    Returns the run's files; raises :class:`TrainingInterrupted` after Ctrl-C (state saved) and
    :class:`TrainingError` when training cannot continue (state of the last good iteration saved).
    """
    world = join(device)
    try:
        return _Run(world, dict(model=model, coco_ann=coco_ann, images=images, output=output, val_ann=val_ann,
                                val_images=val_images, subnet=subnet, detector=detector,
                                backbone_weights=backbone_weights, epochs=epochs, batch=batch, workers=workers, lr=lr,
                                img_size=img_size, warmup_iters=warmup_iters, num_classes=num_classes, seed=seed,
                                device=device, resume=resume, amp=amp, clip_grad=clip_grad, val_interval=val_interval,
                                log_interval=log_interval, tensorboard=tensorboard, force=force,
                                progress=progress)).run()
    finally:
        leave(world)


class _StopFlag:
    """Ctrl-C sets a flag the loop reads between iterations; a second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.raised = False
        self._previous: Any = None

    def __enter__(self) -> "_StopFlag":
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.raised:
            raise KeyboardInterrupt
        self.raised = True

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class _Run:
    """One training run: set up from the arguments (or the run folder when resuming), then the epoch loop."""

    def __init__(self, world: World, args: dict[str, Any]) -> None:
        self.world = world
        self.dir = Path(args["output"])
        self.progress_bars = args["progress"]
        self.settings = resolve_settings(args, run_dir=self.dir, world_size=world.size,
                                         on_cuda=world.device.type == "cuda")
        self.log_interval = self.settings["log_interval"]

    # -- the model -----------------------------------------------------------------------------------------------
    def _build_model(self, class_names: Sequence[str]) -> Any:
        import razorzoo
        from razorzoo.models.initialization import init_for_training

        start = self.settings["start"]
        if start.get("model") is not None:
            source = Path(start["model"]) if start.get("is_path") else start["model"]
            detector = razorzoo.load_detector(source, subnet=start.get("subnet"), detector=start.get("detector"))
        else:
            detector = razorzoo.build_detector(start["subnet_yaml"], detector=start["recipe"])
            backbone = razorzoo.load_backbone(Path(start["backbone_weights"]), subnet=start["subnet_yaml"],
                                              out_indices=detector.backbone.out_indices)
            detector.backbone.load_state_dict(backbone.state_dict(), strict=True)
            init_for_training(detector)
        if tuple(class_names) != detector.class_names:
            detector.set_classes(class_names)
        return detector.set_input_size(self.settings["img_size"])

    # -- the run -------------------------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        from razorzoo.training.dataset import CocoTrainingSet
        from razorzoo.training.pipeline import TrainLoader

        settings = self.settings
        self.pipeline = TRAIN_PIPELINES[settings["recipe"]].at_size(settings["img_size"])
        dataset = CocoTrainingSet(settings["coco_ann"], settings["images"],
                                  filter_empty_gt=self.pipeline.filter_empty_gt, min_size=self.pipeline.min_size)
        if settings["coco_ann_sha256"] != sha256_of(Path(settings["coco_ann"])):
            raise TrainingError(f"{safe_repr(settings['coco_ann'])} changed since this run started; resume with the "
                                "same annotations or start a new run")
        if settings["num_classes"] is not None and settings["num_classes"] != len(dataset.classes):
            raise RazorzooError(f"--num-classes {settings['num_classes']} but {safe_repr(settings['coco_ann'])} has "
                                f"{len(dataset.classes)} categories ({', '.join(dataset.classes[:5])}"
                                f"{', ...' if len(dataset.classes) > 5 else ''})")
        self._check_validation()
        self.board = self._tensorboard()
        settings["class_names"] = list(dataset.classes)
        self.identity = identity(settings)
        self._prepare_folder()

        torch.manual_seed(settings["seed"])  # new head layers start the same in every run with this seed
        self.model = sync_batchnorm(self._build_model(dataset.classes).to(self.world.device), self.world)
        self.loader = TrainLoader(dataset, self.pipeline, batch_size=settings["batch"], workers=settings["workers"],
                                  seed=settings["seed"], rank=self.world.rank, world_size=self.world.size,
                                  max_epochs=settings["epochs"])
        self.schedule = self._schedule()
        self.optimizer = build_optimizer(self.model, self.schedule, world_size=self.world.size)
        self.rates = LearningRates(self.schedule, len(self.loader), settings["epochs"])
        self.ema = ExpMomentumEMA(self.model, self.schedule.ema_momentum, self.schedule.ema_gamma)
        progress = self._restore()
        self.model.train()
        self.trained: torch.nn.Module = _WithLoss(self.model)
        if self.world.size > 1:  # upstream's find_unused_parameters=True: the vestigial backbone stages
            self.trained = torch.nn.parallel.DistributedDataParallel(
                self.trained, device_ids=[self.world.device.index] if self.world.device.type == "cuda" else None,
                find_unused_parameters=True)
        self.scaler = torch.amp.GradScaler("cuda") if settings["amp"] else None
        return self._loop(progress)

    def _schedule(self) -> TrainSchedule:
        schedule = SCHEDULES[self.settings["recipe"]]
        optimizer = replace(schedule.optimizer, lr=self.settings["lr"])
        rates = schedule.schedule
        warmup = self.settings["warmup_iters"]
        if warmup is not None:
            rates = (replace(rates, warmup_epochs=0, warmup_min_iters=warmup) if isinstance(rates, YOLOv5Schedule)
                     else replace(rates, warmup_iters=warmup))
        return replace(schedule, optimizer=optimizer, schedule=rates, val_interval=self.settings["val_interval"],
                       clip_grad_norm=self.settings["clip_grad"])

    def _check_validation(self) -> None:
        if self.settings["val_ann"] is None:
            return
        from razorzoo.evaluation.coco import require_pycocotools

        require_pycocotools()  # the evaluator, before hours of training, not after
        for key in ("val_ann", "val_images"):
            if not Path(self.settings[key]).exists():
                raise RazorzooError(f"--{key.replace('_', '-')} {safe_repr(self.settings[key])} does not exist")

    def _prepare_folder(self) -> None:
        if self.world.is_main:
            self.dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.dir / RUN_FILES["settings"], self.settings)
        if self.world.size > 1:
            torch.distributed.barrier()

    def _restore(self) -> Progress:
        path = self.dir / RUN_FILES["state"]
        if not path.exists():
            return Progress()
        state = load_state(path)
        if state.identity != self.identity:
            differing = sorted(k for k in set(state.identity) | set(self.identity)
                               if state.identity.get(k) != self.identity.get(k))
            raise StateError(f"{safe_repr(str(path))} was written by another run (settings differ: "
                             f"{', '.join(differing[:5])}); start a new run in another folder")
        try:
            self.model.load_state_dict(state.model, strict=True)
            self.model.tie_weights()
            self.optimizer.load_state_dict(state.optimizer)
            self.ema.load_state_dict(state.ema, state.progress.ema_steps)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise StateError(f"{safe_repr(str(path))} does not fit this model ({safe_repr(str(exc), 120)})") from None
        torch.set_rng_state(state.rng)
        return state.progress

    # -- the loop ------------------------------------------------------------------------------------------------
    def _loop(self, progress: Progress) -> TrainResult:
        epochs = self.settings["epochs"]
        with _StopFlag() as stop:
            while progress.epoch < epochs:
                epoch = progress.epoch
                started, images_seen, counted = time.perf_counter(), 0, 0
                sums: dict[str, float] = {}
                for batch in self._batches(epoch, progress):
                    losses = self._step(batch, progress)
                    self.ema.update(self.model)
                    progress.iteration += 1
                    progress.batch += 1
                    progress.ema_steps = self.ema.steps
                    images_seen += len(batch.image_ids) * self.world.size
                    counted += 1
                    for name, value in losses.items():
                        sums[name] = sums.get(name, 0.0) + value
                    if progress.iteration % self.log_interval == 0:
                        self._log("train", progress, losses, images_seen, started)
                    if self.bar is not None:
                        self.bar.set_postfix({name: f"{value:.4g}" for name, value in losses.items()}, refresh=False)
                    if self._stop_requested(stop):
                        self._save(progress)
                        raise TrainingInterrupted(
                            f"interrupted at epoch {epoch + 1} of {epochs}, batch {progress.batch} of "
                            f"{len(self.loader)}; the state is saved: continue with `razorzoo train --resume -o "
                            f"{self.dir}`")
                progress.epoch, progress.batch = epoch + 1, 0
                # the mean over this process's iterations of the epoch (after a resume: those since it)
                self._log("epoch", progress, {name: total / max(counted, 1) for name, total in sums.items()},
                          images_seen, started)
                self._end_epoch(progress)
        best = self.dir / RUN_FILES["best"]
        return TrainResult(self.dir, self.dir / RUN_FILES["last"], best if best.exists() else None, progress.best_ap,
                           epochs)

    def _batches(self, epoch: int, progress: Progress) -> Iterator[Any]:
        """The epoch's batches from where the run is, with a progress bar (rank 0). A data error (an image that
        no longer decodes, ...) first saves the state of the last finished iteration, so nothing is lost: fix the
        data and ``--resume``."""
        from razorzoo.evaluation.engine import show_progress

        batches: Iterator[Any] = self.loader.batches(epoch, skip=progress.batch)
        self.bar = None
        if self.world.is_main and show_progress(self.progress_bars):
            from tqdm.auto import tqdm

            self.bar = tqdm(batches, total=len(self.loader), initial=progress.batch, unit="batch", leave=False,
                            desc=f"epoch {epoch + 1}/{self.settings['epochs']}")
            batches = iter(self.bar)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except RazorzooError as exc:
                if self.world.size == 1:  # several processes: the others are not at the save's barrier
                    self._save(progress)
                raise type(exc)(f"{exc} (the run's state at epoch {epoch + 1}, batch {progress.batch} is saved: "
                                f"fix the data and continue with --resume)") from None
            yield batch

    def _stop_requested(self, stop: _StopFlag) -> bool:
        if self.world.size == 1:
            return stop.raised
        flag = torch.tensor([1.0 if stop.raised else 0.0], device=self.world.device)
        torch.distributed.all_reduce(flag)
        return bool(flag.item())

    def _step(self, batch: Any, progress: Progress) -> dict[str, float]:
        """One iteration; a non-finite loss (on any process) stops the run before it touches the weights."""
        self.rates.apply(self.optimizer, progress.iteration, progress.epoch)
        device = self.world.device
        images = normalize(batch.images.to(device, non_blocking=True), self.model.recipe.normalize)
        targets = [{key: value.to(device) for key, value in target.items()} for target in batch.targets]
        with torch.autocast(device.type, dtype=torch.float16, enabled=self.scaler is not None):
            losses = self.trained(images, targets, progress.epoch)
        total = sum(losses.values())
        finite = torch.isfinite(total.detach()).float().reshape(1)
        if self.world.size > 1:
            torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
        if not bool(finite.item()):
            self._save(progress)
            ids = ", ".join(str(i) for i in batch.image_ids[:8])
            raise TrainingError(f"the loss became {float(total.detach())} at epoch {progress.epoch + 1}, iteration "
                                f"{progress.iteration + 1} (images {ids}{', ...' if len(batch.image_ids) > 8 else ''});"
                                f" the state of the last good iteration is saved in {self.dir}: lower --lr or check "
                                "those images' boxes")
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(total).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            total.backward()
        if self.schedule.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(list(parameters_with_grad(self.optimizer)), self.schedule.clip_grad_norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        return {name: float(value.detach()) for name, value in losses.items()}

    # -- records and files ---------------------------------------------------------------------------------------
    def _log(self, kind: str, progress: Progress, losses: dict[str, float], images_seen: int,
             started: float) -> None:
        if not self.world.is_main:
            return
        elapsed = time.perf_counter() - started
        self._append_log({"type": kind, "epoch": progress.epoch if kind == "epoch" else progress.epoch + 1,
                          "iteration": progress.iteration, "lr": self.optimizer.param_groups[0]["lr"],
                          "loss": sum(losses.values()), **losses,
                          "images_per_s": images_seen / elapsed if elapsed > 0 else None, "time": time.time()})

    def _append_log(self, record: dict[str, Any]) -> None:
        with open(self.dir / RUN_FILES["log"], "a", encoding="utf-8") as f:
            f.write(json.dumps(record, allow_nan=False) + "\n")
        if self.board is not None:
            for name, value in record.items():
                if name not in ("type", "epoch", "iteration", "time") and isinstance(value, (int, float)):
                    self.board.add_scalar(f"{record['type']}/{name}", value, record["iteration"])
            self.board.flush()

    def _tensorboard(self) -> Any:
        """A TensorBoard writer for ``RUN/tensorboard`` on rank 0 when asked for (checked before training starts)."""
        if not self.settings["tensorboard"] or not self.world.is_main:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ModuleNotFoundError:
            raise RazorzooError("--tensorboard needs TensorBoard: pip install 'razorzoo[tensorboard]'") from None
        return SummaryWriter(str(self.dir / "tensorboard"))

    def _save(self, progress: Progress) -> None:
        if self.world.is_main:
            save_state(self.dir / RUN_FILES["state"], identity=self.identity, progress=progress, model=self.model,
                       ema=self.ema.module, optimizer=self.optimizer)
        if self.world.size > 1:
            torch.distributed.barrier()

    def _end_epoch(self, progress: Progress) -> None:
        """Last weights, validation when due (upstream's ``val_interval``, and every epoch from the config's
        ``dynamic_intervals`` milestone, its stage-2 switch), best weights, state."""
        done, epochs = progress.epoch, self.settings["epochs"]
        if self.world.is_main:
            self._write_weights(self.ema.module, RUN_FILES["last"], progress)
            switch = self.pipeline.switch_epoch_for(epochs)
            interval = 1 if switch is not None and done + 1 >= switch else self.settings["val_interval"]
            if self.settings["val_ann"] is not None and (done % interval == 0 or done == epochs):
                ap = self._validate(progress)
                if progress.best_ap is None or ap > progress.best_ap:
                    progress.best_ap, progress.best_epoch = ap, done
                    self._write_weights(self.ema.module, RUN_FILES["best"], progress)
        self._save(progress)

    def _validate(self, progress: Progress) -> float:
        from razorzoo.evaluation.coco import evaluate_coco

        detector = self.ema.module
        detector.eval()
        try:
            result = evaluate_coco(detector, self.settings["val_ann"], self.settings["val_images"],
                                   progress=self.progress_bars)
        finally:
            detector.train()
        stats = {name: (value if value is not None and math.isfinite(value) and value >= 0 else None)
                 for name, value in result.stats.items()}  # None: no ground truth of that kind (no large box, say)
        self._append_log({"type": "val", "epoch": progress.epoch, "iteration": progress.iteration, **stats,
                          "images": result.num_images, "time": time.time()})
        return stats["AP"] or 0.0

    def _write_weights(self, detector: Any, name: str, progress: Progress) -> Path:
        """The EMA weights as a razorzoo converted file whose metadata records the run."""
        from razorzoo.arch.recipes import RECIPES
        from razorzoo.arch.spec import ArchSpec
        from razorzoo.weights.checkpoint import Checkpoint
        from razorzoo.weights.convert import convert_checkpoint

        recipe = RECIPES[detector.recipe.id]
        spec = ArchSpec("detection", detector.backbone.subnet, recipe=recipe.id,
                        class_names=None if detector.class_names == recipe.class_names else detector.class_names,
                        input_size=None if detector.recipe == recipe else detector.recipe.preprocess.size)
        summary = {"epoch": progress.epoch, "iteration": progress.iteration, "best_ap": progress.best_ap,
                   "best_epoch": progress.best_epoch, "settings": self.settings}
        return convert_checkpoint(Checkpoint(detector.state_dict(), "state-dict"), spec, self.dir / name,
                                  source_url=str(self.dir),
                                  metadata={"razorzoo_training": json.dumps(summary, sort_keys=True)})


class _WithLoss(torch.nn.Module):
    """The detector's ``loss`` as a module's ``forward``, so DDP sees the forward pass it synchronises."""

    def __init__(self, detector: torch.nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, images: torch.Tensor, targets: list[dict[str, torch.Tensor]],
                epoch: int) -> dict[str, torch.Tensor]:
        return self.detector.loss(images, targets, epoch=epoch)

