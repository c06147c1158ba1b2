"""Training batches from a dataset and a recipe's train pipeline: stage choice, order, randomness, workers, collate.

``TrainLoader(dataset, TRAIN_PIPELINES[recipe], batch_size=, workers=, seed=, rank=, world_size=)`` gives, per
epoch, :class:`TrainBatch` es: ``images`` (``N x 3 x H x W`` uint8 **BGR**; the trainer normalizes them with the
recipe's ``Normalize`` on its device), ``targets`` (one ``{"boxes": M x 4 float32 xyxy in batch pixels, "labels": M
int64}`` per image, ``M`` may be 0) and the images' ids. It follows upstream (docs/upstream.md §10.3):

* **Stage** (``mmdet.PipelineSwitchHook``): 0-based epoch ``e`` uses stage 2 when ``e >= switch_epoch``
  (:meth:`TrainLoader.stage`).
* **Order** (mmengine ``DefaultSampler(shuffle=True, round_up=True)``): a ``torch.randperm`` seeded with
  ``seed + epoch``, repeated to a multiple of ``world_size``; rank ``r`` takes positions ``r, r + world_size, ...``,
  so the ranks' shards are disjoint and together hold every image (a few twice when the count does not divide).
  Batches are consecutive runs of a rank's positions, the last one possibly shorter (``drop_last=False``).
* **Collate** (``yolov5_collate`` + ``PackDetInputs``): the images stacked channels-first, the boxes per image.

**Randomness.** Every sample draws from its own ``numpy.random.Generator`` seeded with ``(seed, epoch, position)``
(its position in the epoch's order, the same on every rank), continued when upstream would fetch another image
(``RandomCrop`` left no box: mmengine's ``_rand_another``, up to 1000 times). So for pipelines without caches a
sample does not depend on workers, ranks or batch size, and the batch of ``world_size`` ranks with batch ``B`` is
the batch of one process with batch ``world_size * B``.

**Workers and caches.** Decoding and augmentation run in ``workers`` processes (torch ``DataLoader``; they receive
the parsed dataset, never anything unpickled from a user's file). Batch ``k`` of an epoch is made by worker
``k % workers``, in order. The RTMDet stage-1 pipeline caches images in its ``Mosaic`` and ``YOLOXMixUp`` like
upstream, where each worker process has its own caches: a sample's mosaic partners are images that the same worker
saw shortly before. Its batches therefore depend on the number of workers (``workers=0`` and ``1`` are the same) and
on the ranks, and are deterministic for a fixed number of both. Caches start empty at every epoch (upstream's
persistent workers keep them, so only each worker's first 4 samples of an epoch differ: they pass unmixed).

**Resuming mid-epoch.** ``batches(epoch, skip=k)`` starts at batch ``k`` with the batches an uninterrupted epoch
would give. For a cached pipeline each worker replays its share of the skipped batches (augmenting them without
sending them) to rebuild its caches: exact, at the cost of the augmentation of the skipped part.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from razorzoo.arch.train_pipelines import Transform, TrainPipeline
from razorzoo.bounded import check_number
from razorzoo.errors import DatasetError, RazorzooError
from razorzoo.training.dataset import CocoTrainingSet, Sample
from razorzoo.training.transforms import Context, Pipeline, Source

__all__ = ["TrainBatch", "TrainLoader", "epoch_order", "sample_rng", "make_sample", "collate", "MAX_DATASET_REFETCH"]

MAX_DATASET_REFETCH = 1000  # mmengine BaseDataset.max_refetch
_MAX_SEED = 2**62  # seed + epoch must stay a valid torch seed


@dataclass(frozen=True)
class TrainBatch:
    """One batch: ``images`` ``N x 3 x H x W`` uint8 BGR, ``targets`` (``boxes`` ``M x 4`` float32 xyxy in batch
    pixels, ``labels`` ``M`` int64, per image), the ids of the images (``image_ids``) and of every image mixed into
    each (``source_ids``), and the batch's number in its epoch."""

    images: torch.Tensor
    targets: list[dict[str, torch.Tensor]]
    image_ids: tuple[int, ...]
    source_ids: tuple[tuple[int, ...], ...]
    number: int


def epoch_order(num_samples: int, *, epoch: int, seed: int, rank: int = 0, world_size: int = 1
                ) -> list[tuple[int, int]]:
    """This rank's ``(position, dataset index)`` pairs of an epoch, in order (mmengine ``DefaultSampler``)."""
    generator = torch.Generator()
    generator.manual_seed(seed + epoch)
    indices = torch.randperm(num_samples, generator=generator).tolist()
    total = math.ceil(num_samples / world_size) * world_size
    indices = (indices * int(total / num_samples + 1))[:total]
    return [(position, indices[position]) for position in range(rank, total, world_size)]


def sample_rng(seed: int, epoch: int, position: int) -> np.random.Generator:
    """The random generator of the sample at ``position`` of ``epoch``'s order."""
    return np.random.default_rng((seed, epoch, position))


def make_sample(pipeline: Pipeline, source: Source, index: int, rng: np.random.Generator) -> Sample:
    """``pipeline`` on image ``index``; when it gives no sample, on another image drawn from ``rng`` (mmengine's
    ``BaseDataset.__getitem__``)."""
    ctx = Context(rng, source)
    for _ in range(MAX_DATASET_REFETCH + 1):
        sample = pipeline(index, ctx)
        if sample is not None:
            return sample
        index = int(rng.integers(0, len(source)))
    raise DatasetError(f"{pipeline!r} gave no usable image in {MAX_DATASET_REFETCH + 1} tries (every crop lost "
                       "all its boxes?); check that the images hold boxes")


def collate(samples: Sequence[Sample], number: int = 0) -> TrainBatch:
    """``PackDetInputs`` + ``yolov5_collate``: images stacked channels-first (uint8, BGR), targets per image."""
    shapes = sorted({sample.img.shape for sample in samples})
    if len(shapes) != 1:
        raise DatasetError(f"a batch needs images of one size; the pipeline made {shapes}")
    images = torch.from_numpy(np.stack([sample.img.transpose(2, 0, 1) for sample in samples]))
    targets = [{"boxes": torch.from_numpy(np.array(sample.boxes, np.float32).reshape(-1, 4)),
                "labels": torch.from_numpy(np.array(sample.labels, np.int64))} for sample in samples]
    return TrainBatch(images, targets, tuple(sample.img_id for sample in samples),
                      tuple(sample.source_ids for sample in samples), number)


class _Skipped:
    """Stands for a batch before ``skip``: keeps one item per batch, so batch ``k`` stays worker ``k % workers``'s."""


@dataclass(frozen=True)
class _Failure:
    """A user-facing error met in a worker, carried to the main process to be raised there as one line."""

    error: RazorzooError


class _EpochStream(IterableDataset):
    """One epoch's batches; in worker ``w`` of ``n``, batches ``w, w + n, ...`` with a fresh pipeline."""

    def __init__(self, dataset: CocoTrainingSet, transforms: Sequence[Transform],
                 batches: list[list[tuple[int, int]]], seed: int, epoch: int, skip: int) -> None:
        self.dataset, self.transforms, self.batches = dataset, tuple(transforms), batches
        self.seed, self.epoch, self.skip = seed, epoch, skip

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        pipeline = Pipeline(self.transforms)
        for number in range(worker, len(self.batches), workers):
            if number < self.skip and not pipeline.stateful:
                yield _Skipped()
                continue
            try:
                samples = [make_sample(pipeline, self.dataset, index, sample_rng(self.seed, self.epoch, position))
                           for position, index in self.batches[number]]
                yield _Skipped() if number < self.skip else collate(samples, number)
            except RazorzooError as exc:
                yield _Failure(exc)
                return


def _init_worker(worker_id: int) -> None:
    cv2.setNumThreads(0)  # mmengine's mp_cfg opencv_num_threads=0: no OpenCV threads inside the workers


def _count(value: Any, what: str, minimum: int, maximum: int = 2**31) -> int:
    return int(check_number(value, what, minimum=minimum, maximum=maximum, integer=True))


class TrainLoader:
    """Batches of ``dataset`` through ``pipeline``'s stages (see the module docstring).

    Args:
        batch_size, workers: per process; default the recipe's (``pipeline.batch_size``, ``pipeline.workers``).
        seed: the run's seed (order and augmentation). rank, world_size: this process's shard.
        max_epochs: the run's length, which places the stage switch (default the recipe's).
    """

    def __init__(self, dataset: CocoTrainingSet, pipeline: TrainPipeline, *, batch_size: int | None = None,
                 workers: int | None = None, seed: int = 0, rank: int = 0, world_size: int = 1,
                 max_epochs: int | None = None) -> None:
        self.dataset, self.pipeline = dataset, pipeline
        self.batch_size = _count(pipeline.batch_size if batch_size is None else batch_size, "batch size", 1)
        self.workers = _count(pipeline.workers if workers is None else workers, "workers", 0, 256)
        self.seed = _count(seed, "seed", 0, _MAX_SEED)
        self.world_size = _count(world_size, "world size", 1)
        self.rank = _count(rank, "rank", 0, self.world_size - 1)
        self.max_epochs = _count(pipeline.max_epochs if max_epochs is None else max_epochs, "max epochs", 1)

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        return math.ceil(math.ceil(len(self.dataset) / self.world_size) / self.batch_size)

    def __repr__(self) -> str:
        return (f"TrainLoader({self.pipeline.recipe}, {len(self.dataset)} images, batch {self.batch_size}, "
                f"{self.workers} workers, rank {self.rank}/{self.world_size}, seed {self.seed})")

    def stage(self, epoch: int) -> int:
        """1 or 2: the pipeline 0-based ``epoch`` uses."""
        return self.pipeline.stage(epoch, self.max_epochs)

    def batches(self, epoch: int, *, skip: int = 0) -> Iterator[TrainBatch]:
        """The batches of 0-based ``epoch``, from batch number ``skip`` on (a resumed epoch)."""
        epoch = _count(epoch, "epoch", 0, _MAX_SEED)
        skip = _count(skip, "batches to skip", 0, len(self))
        order = epoch_order(len(self.dataset), epoch=epoch, seed=self.seed, rank=self.rank,
                            world_size=self.world_size)
        chunks = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        stream = _EpochStream(self.dataset, self.pipeline.transforms(epoch, self.max_epochs), chunks, self.seed,
                              epoch, skip)
        loader = DataLoader(stream, batch_size=None, num_workers=self.workers,
                            worker_init_fn=_init_worker if self.workers else None)
        for item in loader:
            if isinstance(item, _Failure):
                raise item.error
            if not isinstance(item, _Skipped):
                yield item
