"""Typed training data pipelines of the detector recipes, as frozen data (torch-free).

For each recipe id of :data:`razorzoo.arch.recipes.RECIPES`, :data:`TRAIN_PIPELINES` holds what its MMYOLO config
says about the training data (docs/upstream.md §10): the stage-1 transforms (``train_pipeline``), the stage-2
transforms that ``mmdet.PipelineSwitchHook`` switches to for the last epochs (``train_pipeline_stage2``) and the
epoch it switches at, the dataset's ``filter_cfg``, and the dataloader's batch size per GPU and worker count.

Each transform is a frozen dataclass named and parametrised like the upstream class (every field has upstream's
name and upstream's default; a recipe sets what its config sets). Two steps of every upstream pipeline are implicit
because every recipe has them in the same place: ``LoadImageFromFile`` + ``LoadAnnotations(with_bbox=True)`` first
(also at the head of a mixing transform's ``pre_transform``), ``mmdet.PackDetInputs`` last.
``razorzoo.training.transforms`` runs them.

Left out on purpose: the YOLOv5 recipe's ``mmdet.Albu`` step (``Blur``, ``MedianBlur``, ``ToGray``, ``CLAHE``, each
with probability 0.01), which needs albumentations; it is listed in :attr:`TrainPipeline.omitted`.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass, replace
from typing import Any, Union

__all__ = ["Mosaic", "YOLOv5RandomAffine", "YOLOv5MixUp", "YOLOXMixUp", "YOLOv5HSVRandomAug", "YOLOXHSVRandomAug",
           "RandomFlip", "YOLOv5KeepRatioResize", "LetterResize", "RandomResize", "RandomCrop", "Pad", "Transform",
           "TrainPipeline", "TRAIN_PIPELINES"]


@dataclass(frozen=True)
class _MixImage:
    """MMYOLO ``BaseMixImageTransform``'s settings: skip unless ``U(0, 1) <= prob``; take the other images from the
    dataset, or with ``use_cached`` from a cache of the last ``max_cached_images`` inputs (oldest out with
    ``random_pop=False``, a random one otherwise; with 4 or fewer cached the input passes unchanged); run each other
    image through ``pre_transform`` after loading it."""

    prob: float = 1.0
    use_cached: bool = False
    max_cached_images: int = 20
    random_pop: bool = True
    pre_transform: tuple["Transform", ...] = ()


@dataclass(frozen=True)
class Mosaic(_MixImage):
    """MMYOLO ``Mosaic``: four images around a random centre on a ``2 * img_scale`` canvas (``img_scale`` is
    ``(w, h)``)."""

    img_scale: tuple[int, int] = (640, 640)
    center_ratio_range: tuple[float, float] = (0.5, 1.5)
    bbox_clip_border: bool = True
    pad_val: float = 114.0
    max_cached_images: int = 40


@dataclass(frozen=True)
class YOLOv5RandomAffine:
    """MMYOLO ``YOLOv5RandomAffine``: rotation, scale, shear and translation about the image centre on a canvas grown
    by ``2 * border`` (``(x, y)``); boxes are the hull of their warped corners, clipped, then filtered by size,
    area ratio and aspect ratio."""

    max_rotate_degree: float = 10.0
    max_translate_ratio: float = 0.1
    scaling_ratio_range: tuple[float, float] = (0.5, 1.5)
    max_shear_degree: float = 2.0
    border: tuple[int, int] = (0, 0)
    border_val: tuple[int, int, int] = (114, 114, 114)
    bbox_clip_border: bool = True
    min_bbox_size: float = 2
    min_area_ratio: float = 0.1
    max_aspect_ratio: float = 20.0


@dataclass(frozen=True)
class YOLOv5MixUp(_MixImage):
    """MMYOLO ``YOLOv5MixUp``: blend with another image made by ``pre_transform`` (same size), ratio from
    ``Beta(alpha, beta)``; the boxes of both are kept."""

    alpha: float = 32.0
    beta: float = 32.0


@dataclass(frozen=True)
class YOLOXMixUp(_MixImage):
    """MMYOLO ``YOLOXMixUp``: another image resized into an ``img_scale`` (``(w, h)``) canvas, jittered by
    ``ratio_range``, maybe flipped, randomly cropped to this image's size, then averaged 50/50 with it."""

    img_scale: tuple[int, int] = (640, 640)
    ratio_range: tuple[float, float] = (0.5, 1.5)
    flip_ratio: float = 0.5
    pad_val: Union[float, tuple[float, float, float]] = 114.0
    bbox_clip_border: bool = True


@dataclass(frozen=True)
class YOLOv5HSVRandomAug:
    """MMYOLO ``YOLOv5HSVRandomAug``: multiply hue, saturation and value by ``1 + U(-1, 1) * delta`` (lookup tables)."""

    hue_delta: float = 0.015
    saturation_delta: float = 0.7
    value_delta: float = 0.4


@dataclass(frozen=True)
class YOLOXHSVRandomAug:
    """mmdet ``YOLOXHSVRandomAug``: add ``int(U(-1, 1) * delta)`` to each of hue, saturation, value, each with
    probability 1/2."""

    hue_delta: int = 5
    saturation_delta: int = 30
    value_delta: int = 30


@dataclass(frozen=True)
class RandomFlip:
    """mmdet ``RandomFlip(prob)``, horizontal (the only direction the recipes use)."""

    prob: float = 0.5


@dataclass(frozen=True)
class YOLOv5KeepRatioResize:
    """MMYOLO ``YOLOv5KeepRatioResize``: the long side to ``scale`` (``(w, h)``), truncated sizes, area
    interpolation when shrinking."""

    scale: tuple[int, int] = (640, 640)


@dataclass(frozen=True)
class LetterResize:
    """MMYOLO ``LetterResize``: fit into ``scale`` (``(w, h)``; only shrink unless ``allow_scale_up``), centred on a
    ``pad_val`` canvas."""

    scale: tuple[int, int] = (640, 640)
    pad_val: int = 114  # the configs' pad_val=dict(img=114)
    allow_scale_up: bool = True


@dataclass(frozen=True)
class RandomResize:
    """mmcv ``RandomResize(scale, ratio_range)`` with ``resize_type='mmdet.Resize', keep_ratio=True``: ``scale``
    (``(w, h)``) times a ratio drawn from ``ratio_range``, then ``mmcv.imrescale`` (rounded sizes, bilinear)."""

    scale: tuple[int, int] = (640, 640)
    ratio_range: tuple[float, float] = (0.5, 2.0)


@dataclass(frozen=True)
class RandomCrop:
    """mmdet ``RandomCrop(crop_size, crop_type='absolute')``: a random ``crop_size`` (``(w, h)``) window; boxes
    clipped, boxes left outside dropped, and an image left without boxes refetched unless
    ``allow_negative_crop``."""

    crop_size: tuple[int, int] = (640, 640)
    allow_negative_crop: bool = False
    bbox_clip_border: bool = True


@dataclass(frozen=True)
class Pad:
    """mmdet ``Pad(size, pad_val)``: pad bottom and right to ``size`` (``(w, h)``)."""

    size: tuple[int, int] = (640, 640)
    pad_val: tuple[int, int, int] = (114, 114, 114)  # the configs' pad_val=dict(img=(114, 114, 114))


Transform = Union[Mosaic, YOLOv5RandomAffine, YOLOv5MixUp, YOLOXMixUp, YOLOv5HSVRandomAug, YOLOXHSVRandomAug,
                  RandomFlip, YOLOv5KeepRatioResize, LetterResize, RandomResize, RandomCrop, Pad]


@dataclass(frozen=True)
class TrainPipeline:
    """What a recipe's config says about training data, beyond the model.

    ``stage1`` is ``train_pipeline``; ``stage2`` (or ``None``) is the ``switch_pipeline`` of the config's
    ``PipelineSwitchHook``, used from the 0-based epoch ``switch_epoch`` on (``max_epochs - stage2_epochs`` in the
    config). ``filter_empty_gt``/``min_size`` are the dataset's ``filter_cfg``; ``batch_size`` and ``workers`` the
    dataloader's per GPU. ``omitted`` names upstream steps razorzoo leaves out.
    """

    recipe: str
    img_scale: tuple[int, int]
    stage1: tuple[Transform, ...]
    stage2: tuple[Transform, ...] | None
    stage2_epochs: int
    max_epochs: int
    filter_empty_gt: bool
    min_size: int
    batch_size: int
    workers: int
    omitted: tuple[str, ...] = ()

    @property
    def switch_epoch(self) -> int | None:
        """The config's ``PipelineSwitchHook.switch_epoch`` (at its own ``max_epochs``), or ``None``."""
        return self.switch_epoch_for(self.max_epochs)

    def switch_epoch_for(self, max_epochs: int) -> int | None:
        """The first 0-based epoch that uses ``stage2`` in a run of ``max_epochs``: the config's own expression,
        ``max_epochs - stage2_epochs`` (at least 0: a run shorter than that is all stage 2); ``None`` without a
        stage 2."""
        return None if self.stage2 is None else max(0, max_epochs - self.stage2_epochs)

    def stage(self, epoch: int, max_epochs: int | None = None) -> int:
        """1 or 2: the pipeline ``PipelineSwitchHook`` gives 0-based ``epoch`` (``epoch >= switch_epoch``) of a run
        of ``max_epochs`` (default: the config's)."""
        switch = self.switch_epoch_for(self.max_epochs if max_epochs is None else max_epochs)
        return 2 if switch is not None and epoch >= switch else 1

    def transforms(self, epoch: int, max_epochs: int | None = None) -> tuple[Transform, ...]:
        """The transforms of the stage ``epoch`` uses (see :meth:`stage`)."""
        return self.stage2 if self.stage(epoch, max_epochs) == 2 else self.stage1  # type: ignore[return-value]

    def at_size(self, size: int) -> "TrainPipeline":
        """The same pipeline for a ``size x size`` training canvas instead of ``img_scale``: every size in it (mosaic
        canvas, affine border, resize and crop targets, padding, the mix-up canvas) scaled by ``size /
        img_scale``, as changing ``img_scale`` in the config does."""
        factor = size / self.img_scale[0]
        return replace(self, img_scale=(size, size), stage1=_scaled(self.stage1, factor),
                       stage2=None if self.stage2 is None else _scaled(self.stage2, factor))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe form, transforms as upstream config dicts (``{"type": name, **fields}``), e.g. for a
        training run's resolved settings."""
        data = {f.name: _plain(getattr(self, f.name)) for f in fields(self)}
        data["switch_epoch"] = self.switch_epoch
        return data


_SIZE_FIELDS = ("img_scale", "border", "scale", "crop_size", "size")


def _scaled(transforms: tuple["Transform", ...], factor: float) -> tuple["Transform", ...]:
    """``transforms`` (and their ``pre_transform`` s) with every pixel size multiplied by ``factor``."""
    out = []
    for transform in transforms:
        changes: dict[str, Any] = {name: tuple(round(v * factor) for v in getattr(transform, name))
                                   for name in _SIZE_FIELDS if hasattr(transform, name)}
        if getattr(transform, "pre_transform", ()):
            changes["pre_transform"] = _scaled(transform.pre_transform, factor)
        out.append(replace(transform, **changes))
    return tuple(out)


def _plain(value: Any) -> Any:
    """Transforms as ``{"type": class name, **fields}``, tuples as lists, all the way down."""
    if is_dataclass(value):
        return {"type": type(value).__name__, **{f.name: _plain(getattr(value, f.name)) for f in fields(value)}}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _yolo_stage1(affine_scale: float) -> tuple[Transform, ...]:
    """``Mosaic`` + ``YOLOv5RandomAffine`` on the 2x canvas, as the YOLOv5/YOLOv6 configs' ``mosaic_affine``."""
    return (Mosaic(img_scale=(640, 640), pad_val=114.0),
            YOLOv5RandomAffine(max_rotate_degree=0.0, max_shear_degree=0.0,
                               scaling_ratio_range=(1 - affine_scale, 1 + affine_scale), border=(-320, -320),
                               border_val=(114, 114, 114)))


_YOLO_COLOUR_FLIP = (YOLOv5HSVRandomAug(), RandomFlip(prob=0.5))
# 1 - 0.9 and 1 + 0.9 in floating point, as the YOLOv6 config computes them (0.09999999999999998, 1.9)
_YOLOV6_MOSAIC_AFFINE = _yolo_stage1(0.9)

TRAIN_PIPELINES: dict[str, TrainPipeline] = {
    pipeline.recipe: pipeline
    for pipeline in (
        TrainPipeline(
            recipe="yolov5_s",
            img_scale=(640, 640),
            stage1=(*_yolo_stage1(0.5), *_YOLO_COLOUR_FLIP),
            stage2=None,
            stage2_epochs=0,
            max_epochs=300,
            filter_empty_gt=False,
            min_size=32,
            batch_size=16,
            workers=8,
            omitted=("mmdet.Albu",),
        ),
        TrainPipeline(
            recipe="yolov6_l_d12",
            img_scale=(640, 640),
            stage1=(*_YOLOV6_MOSAIC_AFFINE, YOLOv5MixUp(prob=0.1, pre_transform=_YOLOV6_MOSAIC_AFFINE),
                    *_YOLO_COLOUR_FLIP),
            stage2=(YOLOv5KeepRatioResize(scale=(640, 640)),
                    LetterResize(scale=(640, 640), pad_val=114, allow_scale_up=True),
                    YOLOv5RandomAffine(max_rotate_degree=0.0, max_shear_degree=0.0, max_translate_ratio=0.1,
                                       scaling_ratio_range=(0.5, 1.5)),
                    *_YOLO_COLOUR_FLIP),
            stage2_epochs=15,  # num_last_epochs: switch_epoch = 300 - 15 = 285
            max_epochs=300,
            filter_empty_gt=False,
            min_size=32,
            batch_size=16,  # the razor config sets train_dataloader.batch_size = 16 (its optimizer still says 32)
            workers=8,
        ),
        TrainPipeline(
            recipe="rtmdet_tiny",
            img_scale=(960, 960),
            stage1=(Mosaic(img_scale=(960, 960), use_cached=True, max_cached_images=20, random_pop=False,
                           pad_val=114.0),
                    RandomResize(scale=(1280, 1280), ratio_range=(0.5, 2.0)),
                    RandomCrop(crop_size=(960, 960)),
                    YOLOXHSVRandomAug(),
                    RandomFlip(prob=0.5),
                    Pad(size=(960, 960), pad_val=(114, 114, 114)),
                    YOLOXMixUp(img_scale=(960, 960), ratio_range=(1.0, 1.0), max_cached_images=10, use_cached=True,
                               random_pop=False, pad_val=(114, 114, 114), prob=0.5)),
            stage2=(RandomResize(scale=(960, 960), ratio_range=(0.5, 2.0)),
                    RandomCrop(crop_size=(960, 960)),
                    YOLOXHSVRandomAug(),
                    RandomFlip(prob=0.5),
                    Pad(size=(960, 960), pad_val=(114, 114, 114))),
            stage2_epochs=20,  # num_epochs_stage2: switch_epoch = 300 - 20 = 280
            max_epochs=300,
            filter_empty_gt=True,
            min_size=32,
            batch_size=16,
            workers=10,
        ),
    )
}
