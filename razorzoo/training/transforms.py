"""The train transforms of the recipes, reproduced transform by transform from MMYOLO, mmdet and mmcv.

:class:`Pipeline` runs a tuple of :mod:`razorzoo.arch.train_pipelines` configs:
``pipeline(index, context)`` loads image ``index`` of ``context.source`` (``LoadImageFromFile`` +
``LoadAnnotations``) and runs each transform on the :class:`~razorzoo.training.dataset.Sample`. Each transform keeps
upstream's parameters, order of operations, interpolation, pad values and box rules (docs/upstream.md §10.2): boxes
are float32 and go through the same operations as mmdet's ``HorizontalBoxes`` (``rescale_``, ``translate_``,
``clip_``, ``flip_``, ``project_``, ``is_inside``), images through the same OpenCV calls as ``mmcv.imresize``,
``impad``, ``imflip``.

**Randomness** comes from ``context.rng``, never from global state, and each transform draws exactly what upstream
draws from ``numpy.random``, in the same order and with the same arguments: ``np.random.uniform`` is
``rng.uniform``, ``randint`` is ``rng.integers``, ``random_sample`` and ``choice(p=...)`` are one ``rng.random()``,
``beta`` is ``rng.beta``. A ``numpy.random.Generator`` fits; so does a ``RandomState`` behind a two-name adapter,
which is how the tests replay upstream's own draws (tests/data/train_pipeline/README.md).

**State.** A mixing transform with ``use_cached`` keeps a cache of the samples it saw (``Mosaic``: the loaded
images; ``YOLOXMixUp``: its inputs), exactly like upstream's per-process ``results_cache``; so its output depends on
what the same :class:`Pipeline` object processed before. :attr:`Pipeline.stateful` says whether a pipeline has such
a cache and :meth:`Pipeline.reset` empties them.

A transform returns ``None`` when the sample must be replaced (``RandomCrop`` left no box and negative crops are not
allowed); the caller draws another image, as mmengine's dataset does (``razorzoo.training.pipeline``).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from typing import Any, Callable, Optional, Protocol, Sequence

import cv2
import numpy as np

from razorzoo.arch import train_pipelines as cfgs
from razorzoo.errors import DatasetError
from razorzoo.training.dataset import Sample

__all__ = ["Random", "Source", "Context", "Pipeline", "MAX_REFETCH"]

MAX_REFETCH = 15  # BaseMixImageTransform.max_refetch: tries to build the other images of a mix


class Random(Protocol):
    """The draws the transforms make (the names of ``numpy.random.Generator``)."""

    def uniform(self, low: float = 0.0, high: float = 1.0, size: Any = None) -> Any: ...
    def integers(self, low: int, high: int, size: Any = None) -> Any: ...
    def random(self) -> float: ...
    def beta(self, a: float, b: float) -> float: ...


class Source(Protocol):
    """Where a pipeline's images come from (a :class:`~razorzoo.training.dataset.CocoTrainingSet`)."""

    def __len__(self) -> int: ...
    def load(self, index: int) -> Sample: ...


@dataclass(frozen=True)
class Context:
    """What a transform may use besides its sample: the sample's random generator and the dataset."""

    rng: Random
    source: Source


Step = Callable[[Sample, Context], Optional[Sample]]

# ---- boxes: float32 arrays, the operations of mmdet's HorizontalBoxes -------------------------------------------


def _rescaled(boxes: np.ndarray, sx: float, sy: float) -> np.ndarray:
    return boxes * np.array([sx, sy, sx, sy], np.float32)


def _translated(boxes: np.ndarray, dx: float, dy: float) -> np.ndarray:
    return boxes + np.array([dx, dy, dx, dy], np.float32)


def _clipped(boxes: np.ndarray, height: float, width: float) -> np.ndarray:
    out = boxes.copy()
    out[:, 0::2] = out[:, 0::2].clip(0, width)
    out[:, 1::2] = out[:, 1::2].clip(0, height)
    return out


def _inside(boxes: np.ndarray, height: float, width: float) -> np.ndarray:
    """``is_inside``: boxes that overlap the image at least partly."""
    return (boxes[:, 0] < width) & (boxes[:, 1] < height) & (boxes[:, 2] > 0) & (boxes[:, 3] > 0)


def _flipped(boxes: np.ndarray, width: float) -> np.ndarray:
    return np.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], axis=1)


def _projected(boxes: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``project_``: the bounding box of the four corners mapped by a 3x3 homography."""
    x1, y1, x2, y2 = boxes.T
    corners = np.stack([np.stack([x1, y1], 1), np.stack([x2, y1], 1), np.stack([x1, y2], 1),
                        np.stack([x2, y2], 1)], axis=1)  # N x 4 x 2
    homogeneous = np.concatenate([corners, np.ones(corners.shape[:2] + (1,), np.float32)], axis=-1)
    mapped = homogeneous @ matrix.astype(np.float32).T
    points = mapped[..., :2] / mapped[..., 2:3]
    return np.concatenate([points.min(axis=1), points.max(axis=1)], axis=1).astype(np.float32)


def _clip_or_drop(boxes: np.ndarray, labels: np.ndarray, height: int, width: int, clip: bool
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``bbox_clip_border``: clip the boxes to the image, else drop those entirely outside it."""
    if clip:
        return _clipped(boxes, height, width), labels
    keep = _inside(boxes, height, width)
    return boxes[keep], labels[keep]


# ---- images: the OpenCV calls behind mmcv's helpers -------------------------------------------------------------


def _resize(img: np.ndarray, width: int, height: int, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """``mmcv.imresize`` (``cv2.resize``); a side that truncates to 0 is kept at 1 pixel (cv2 would fail)."""
    return cv2.resize(img, (max(1, width), max(1, height)), interpolation=interpolation)


def _pad(img: np.ndarray, top: int, bottom: int, left: int, right: int, value: Sequence[float]) -> np.ndarray:
    """``mmcv.impad`` with a constant value."""
    return cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=tuple(value))


# ---- single-image transforms --------------------------------------------------------------------------------------


def random_affine(cfg: cfgs.YOLOv5RandomAffine, sample: Sample, ctx: Context) -> Sample:
    """MMYOLO ``YOLOv5RandomAffine`` (boxes without masks: the corners' hull, then ``filter_gt_bboxes``)."""
    img = sample.img
    height = img.shape[0] + cfg.border[1] * 2
    width = img.shape[1] + cfg.border[0] * 2
    center = np.eye(3, dtype=np.float32)
    center[0, 2] = -img.shape[1] / 2
    center[1, 2] = -img.shape[0] / 2
    matrix, scale = _homography(cfg, ctx.rng, height, width)
    matrix = matrix @ center
    img = cv2.warpPerspective(img, matrix, dsize=(width, height), borderValue=tuple(cfg.border_val))
    if not len(sample.boxes):
        return replace(sample, img=img)
    boxes = _projected(sample.boxes, matrix)
    if cfg.bbox_clip_border:
        boxes = _clipped(boxes, height, width)
    original = _rescaled(sample.boxes, scale, scale)
    keep = _affine_keeps(cfg, original, boxes)
    return replace(sample, img=img, boxes=boxes[keep], labels=sample.labels[keep])


def _homography(cfg: cfgs.YOLOv5RandomAffine, rng: Random, height: int, width: int) -> tuple[np.ndarray, float]:
    """``_get_random_homography_matrix``: translate @ shear @ rotate @ scale, float32, and the scale."""
    radian = math.radians(rng.uniform(-cfg.max_rotate_degree, cfg.max_rotate_degree))
    rotation = np.array([[np.cos(radian), -np.sin(radian), 0.0], [np.sin(radian), np.cos(radian), 0.0],
                         [0.0, 0.0, 1.0]], dtype=np.float32)
    scale = rng.uniform(cfg.scaling_ratio_range[0], cfg.scaling_ratio_range[1])
    scaling = np.array([[scale, 0.0, 0.0], [0.0, scale, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    x_shear = math.radians(rng.uniform(-cfg.max_shear_degree, cfg.max_shear_degree))
    y_shear = math.radians(rng.uniform(-cfg.max_shear_degree, cfg.max_shear_degree))
    shear = np.array([[1, np.tan(x_shear), 0.0], [np.tan(y_shear), 1, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    tx = rng.uniform(0.5 - cfg.max_translate_ratio, 0.5 + cfg.max_translate_ratio) * width
    ty = rng.uniform(0.5 - cfg.max_translate_ratio, 0.5 + cfg.max_translate_ratio) * height
    translation = np.array([[1, 0.0, tx], [0.0, 1, ty], [0.0, 0.0, 1.0]], dtype=np.float32)
    return translation @ shear @ rotation @ scaling, scale


def _affine_keeps(cfg: cfgs.YOLOv5RandomAffine, original: np.ndarray, warped: np.ndarray) -> np.ndarray:
    """``filter_gt_bboxes``: both sides above ``min_bbox_size``, area ratio to the scaled original above
    ``min_area_ratio``, aspect ratio below ``max_aspect_ratio``."""
    ow, oh = original[:, 2] - original[:, 0], original[:, 3] - original[:, 1]
    w, h = warped[:, 2] - warped[:, 0], warped[:, 3] - warped[:, 1]
    aspect = np.maximum(w / (h + 1e-16), h / (w + 1e-16))
    return ((w > cfg.min_bbox_size) & (h > cfg.min_bbox_size) & (w * h / (ow * oh + 1e-16) > cfg.min_area_ratio)
            & (aspect < cfg.max_aspect_ratio))


def yolov5_hsv(cfg: cfgs.YOLOv5HSVRandomAug, sample: Sample, ctx: Context) -> Sample:
    """MMYOLO ``YOLOv5HSVRandomAug``: hue, saturation and value gains through lookup tables."""
    gains = ctx.rng.uniform(-1, 1, 3) * [cfg.hue_delta, cfg.saturation_delta, cfg.value_delta] + 1
    hue, sat, val = cv2.split(cv2.cvtColor(sample.img, cv2.COLOR_BGR2HSV))
    table = np.arange(0, 256, dtype=gains.dtype)
    lut_hue = ((table * gains[0]) % 180).astype(np.uint8)
    lut_sat = np.clip(table * gains[1], 0, 255).astype(np.uint8)
    lut_val = np.clip(table * gains[2], 0, 255).astype(np.uint8)
    hsv = cv2.merge((cv2.LUT(hue, lut_hue), cv2.LUT(sat, lut_sat), cv2.LUT(val, lut_val)))
    return replace(sample, img=cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR))


def yolox_hsv(cfg: cfgs.YOLOXHSVRandomAug, sample: Sample, ctx: Context) -> Sample:
    """mmdet ``YOLOXHSVRandomAug``: integer offsets on hue (mod 180), saturation and value (clipped)."""
    gains = ctx.rng.uniform(-1, 1, 3) * [cfg.hue_delta, cfg.saturation_delta, cfg.value_delta]
    gains *= ctx.rng.integers(0, 2, 3)
    gains = gains.astype(np.int16)
    hsv = cv2.cvtColor(sample.img, cv2.COLOR_BGR2HSV).astype(np.int16)
    hsv[..., 0] = (hsv[..., 0] + gains[0]) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] + gains[1], 0, 255)
    hsv[..., 2] = np.clip(hsv[..., 2] + gains[2], 0, 255)
    return replace(sample, img=cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR))


def random_flip(cfg: cfgs.RandomFlip, sample: Sample, ctx: Context) -> Sample:
    """mmdet ``RandomFlip(prob)``, horizontal: ``np.random.choice(['horizontal', None], p=[prob, 1 - prob])`` is
    one uniform draw against the cumulative probability."""
    if not ctx.rng.random() < cfg.prob / (cfg.prob + (1.0 - cfg.prob)):
        return sample
    width = sample.img.shape[1]
    return replace(sample, img=np.ascontiguousarray(sample.img[:, ::-1]), boxes=_flipped(sample.boxes, width))


def keep_ratio_resize(cfg: cfgs.YOLOv5KeepRatioResize, sample: Sample, ctx: Context) -> Sample:
    """MMYOLO ``YOLOv5KeepRatioResize``: truncated sizes, ``INTER_AREA`` when shrinking; boxes rescaled, clipped."""
    img = sample.img
    h, w = img.shape[:2]
    ratio = min(max(cfg.scale) / max(h, w), min(cfg.scale) / min(h, w))
    if ratio != 1:
        img = _resize(img, int(w * ratio), int(h * ratio), cv2.INTER_AREA if ratio < 1 else cv2.INTER_LINEAR)
    nh, nw = img.shape[:2]
    return replace(sample, img=img, boxes=_clipped(_rescaled(sample.boxes, nw / w, nh / h), nh, nw))


def letter_resize(cfg: cfgs.LetterResize, sample: Sample, ctx: Context) -> Sample:
    """MMYOLO ``LetterResize``: fit (rounded sizes, bilinear), centre with upstream's rule, pad; boxes follow."""
    img = sample.img
    h, w = img.shape[:2]
    target_h, target_w = cfg.scale[1], cfg.scale[0]
    ratio = min(target_h / h, target_w / w)
    if not cfg.allow_scale_up:
        ratio = min(ratio, 1.0)
    nh, nw = int(round(h * ratio)), int(round(w * ratio))
    pad_h, pad_w = target_h - nh, target_w - nw
    if (h, w) != (nh, nw):
        img = _resize(img, nw, nh)
    top, left = int(round(pad_h // 2 - 0.1)), int(round(pad_w // 2 - 0.1))
    if pad_h or pad_w:
        img = _pad(img, top, pad_h - top, left, pad_w - left, (cfg.pad_val,) * 3)
    boxes = _translated(_rescaled(sample.boxes, nw / w, nh / h), left, top)
    return replace(sample, img=img, boxes=_clipped(boxes, *img.shape[:2]))


def random_resize(cfg: cfgs.RandomResize, sample: Sample, ctx: Context) -> Sample:
    """mmcv ``RandomResize`` (a ratio of ``scale``) into mmdet ``Resize(keep_ratio=True)`` (``mmcv.imrescale``:
    sizes ``int(x * factor + 0.5)``, bilinear); boxes rescaled by the real size ratios, clipped."""
    low, high = cfg.ratio_range
    ratio = ctx.rng.random() * (high - low) + low
    scale = int(cfg.scale[0] * ratio), int(cfg.scale[1] * ratio)
    h, w = sample.img.shape[:2]
    factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
    img = _resize(sample.img, int(w * factor + 0.5), int(h * factor + 0.5))
    nh, nw = img.shape[:2]
    return replace(sample, img=img, boxes=_clipped(_rescaled(sample.boxes, nw / w, nh / h), nh, nw))


def random_crop(cfg: cfgs.RandomCrop, sample: Sample, ctx: Context) -> Sample | None:
    """mmdet ``RandomCrop(crop_type='absolute')``: ``None`` when no box is left and negative crops are refused."""
    h, w = sample.img.shape[:2]
    crop_h, crop_w = min(cfg.crop_size[1], h), min(cfg.crop_size[0], w)
    top = int(ctx.rng.integers(0, max(h - crop_h, 0) + 1))
    left = int(ctx.rng.integers(0, max(w - crop_w, 0) + 1))
    img = sample.img[top:top + crop_h, left:left + crop_w]
    boxes = _translated(sample.boxes, -left, -top)
    if cfg.bbox_clip_border:
        boxes = _clipped(boxes, crop_h, crop_w)
    keep = _inside(boxes, crop_h, crop_w)
    if not keep.any() and not cfg.allow_negative_crop:
        return None
    return replace(sample, img=np.ascontiguousarray(img), boxes=boxes[keep], labels=sample.labels[keep])


def pad(cfg: cfgs.Pad, sample: Sample, ctx: Context) -> Sample:
    """mmdet ``Pad(size)``: bottom and right, to at least ``size``."""
    h, w = sample.img.shape[:2]
    return replace(sample, img=_pad(sample.img, 0, max(cfg.size[1] - h, 0), 0, max(cfg.size[0] - w, 0),
                                    cfg.pad_val))


# ---- mixing transforms (BaseMixImageTransform) ----------------------------------------------------------------------


class _MixTransform:
    """``BaseMixImageTransform.transform``: the probability draw, the cache, the other images (from the cache or the
    dataset, each through ``pre_transform``), then :meth:`mix`."""

    count = 1  # how many other images

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.pre_transform = [_step(c) for c in cfg.pre_transform]
        self.cache: list[Sample] = []

    def __call__(self, sample: Sample, ctx: Context) -> Sample:
        cfg, rng = self.cfg, ctx.rng
        if rng.uniform(0, 1) > cfg.prob:
            return sample
        if cfg.use_cached:
            self.cache.append(sample)
            if len(self.cache) > cfg.max_cached_images:
                self.cache.pop(int(rng.integers(0, len(self.cache) - 1)) if cfg.random_pop else 0)
            if len(self.cache) <= 4:
                return sample
        for _ in range(MAX_REFETCH):
            size = len(self.cache) if cfg.use_cached else len(ctx.source)
            indexes = [int(rng.integers(0, size)) for _ in range(self.count)]
            others = [self.cache[i] if cfg.use_cached else ctx.source.load(i) for i in indexes]
            others = [_run(self.pre_transform, other, ctx) for other in others]
            if None not in others:
                return self.mix(sample, others, rng)  # type: ignore[arg-type]
        raise DatasetError(f"{type(cfg).__name__}: the pre_transform of its other images returned no image "
                           f"{MAX_REFETCH} times in a row; check the dataset and the pipeline")

    def mix(self, sample: Sample, others: list[Sample], rng: Random) -> Sample:
        raise NotImplementedError


def _sources(sample: Sample, others: Sequence[Sample]) -> tuple[int, ...]:
    return sample.source_ids + tuple(i for other in others for i in other.source_ids)


class _Mosaic(_MixTransform):
    """MMYOLO ``Mosaic``."""

    count = 3

    def mix(self, sample: Sample, others: list[Sample], rng: Random) -> Sample:
        cfg = self.cfg
        scale_w, scale_h = cfg.img_scale
        canvas_w, canvas_h = int(scale_w * 2), int(scale_h * 2)
        canvas = np.full((canvas_h, canvas_w, 3), cfg.pad_val, dtype=np.uint8)
        cx = int(rng.uniform(*cfg.center_ratio_range) * scale_w)
        cy = int(rng.uniform(*cfg.center_ratio_range) * scale_h)
        boxes, labels = [], []
        for corner, patch in zip(_CORNERS, (sample, *others)):
            h, w = patch.img.shape[:2]
            ratio = min(scale_h / h, scale_w / w)
            img = _resize(patch.img, int(w * ratio), int(h * ratio))
            (x1, y1, x2, y2), (cx1, cy1, cx2, cy2) = _mosaic_combine(corner, cx, cy, img.shape[1], img.shape[0],
                                                                     canvas_w, canvas_h)
            canvas[y1:y2, x1:x2] = img[cy1:cy2, cx1:cx2]
            boxes.append(_translated(_rescaled(patch.boxes, ratio, ratio), x1 - cx1, y1 - cy1))
            labels.append(patch.labels)
        boxes, labels = _clip_or_drop(np.concatenate(boxes), np.concatenate(labels), canvas_h, canvas_w,
                                      cfg.bbox_clip_border)
        return replace(sample, img=canvas, boxes=boxes, labels=labels, source_ids=_sources(sample, others))


_CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")


def _mosaic_combine(corner: str, cx: int, cy: int, w: int, h: int, canvas_w: int, canvas_h: int
                    ) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
    """``Mosaic._mosaic_combine``: where a ``w x h`` image goes on the canvas, and which part of it."""
    if corner == "top_left":
        x1, y1, x2, y2 = max(cx - w, 0), max(cy - h, 0), cx, cy
        crop = w - (x2 - x1), h - (y2 - y1), w, h
    elif corner == "top_right":
        x1, y1, x2, y2 = cx, max(cy - h, 0), min(cx + w, canvas_w), cy
        crop = 0, h - (y2 - y1), min(w, x2 - x1), h
    elif corner == "bottom_left":
        x1, y1, x2, y2 = max(cx - w, 0), cy, cx, min(canvas_h, cy + h)
        crop = w - (x2 - x1), 0, w, min(y2 - y1, h)
    else:
        x1, y1, x2, y2 = cx, cy, min(cx + w, canvas_w), min(canvas_h, cy + h)
        crop = 0, 0, min(w, x2 - x1), min(y2 - y1, h)
    return (x1, y1, x2, y2), crop


class _YOLOv5MixUp(_MixTransform):
    """MMYOLO ``YOLOv5MixUp``."""

    def mix(self, sample: Sample, others: list[Sample], rng: Random) -> Sample:
        other = others[0]
        if other.img.shape != sample.img.shape:
            raise DatasetError(f"YOLOv5MixUp needs images of one size, got {sample.img.shape} and "
                               f"{other.img.shape}; its pre_transform must end at the pipeline's size")
        ratio = rng.beta(self.cfg.alpha, self.cfg.beta)
        img = (sample.img * ratio + other.img * (1 - ratio)).astype(np.uint8)
        return replace(sample, img=img, boxes=np.concatenate([sample.boxes, other.boxes]),
                       labels=np.concatenate([sample.labels, other.labels]), source_ids=_sources(sample, others))


class _YOLOXMixUp(_MixTransform):
    """MMYOLO ``YOLOXMixUp``."""

    def mix(self, sample: Sample, others: list[Sample], rng: Random) -> Sample:
        cfg, other = self.cfg, others[0]
        if not len(other.boxes):
            return sample
        jitter = rng.uniform(*cfg.ratio_range)
        flip = rng.uniform(0, 1) > cfg.flip_ratio
        scale_w, scale_h = cfg.img_scale
        pad_value = np.broadcast_to(np.asarray(cfg.pad_val, np.float64), (3,))
        # upstream builds this canvas as ones(uint8) * pad_val: float64 for the default 114.0, resized as such
        canvas = np.empty((scale_h, scale_w, 3), np.float64)
        canvas[:] = pad_value
        h, w = other.img.shape[:2]
        ratio = min(scale_h / h, scale_w / w)
        resized = _resize(other.img, int(w * ratio), int(h * ratio))
        canvas[:resized.shape[0], :resized.shape[1]] = resized
        ratio *= jitter
        canvas = _resize(canvas, int(canvas.shape[1] * jitter), int(canvas.shape[0] * jitter))
        if flip:
            canvas = canvas[:, ::-1, :]
        origin_h, origin_w = canvas.shape[:2]
        target_h, target_w = sample.img.shape[:2]
        padded = np.empty((max(origin_h, target_h), max(origin_w, target_w), 3), np.uint8)
        padded[:] = pad_value.astype(np.uint8)
        padded[:origin_h, :origin_w] = canvas  # float -> uint8 truncates, as upstream's assignment
        y_offset = int(rng.integers(0, padded.shape[0] - target_h)) if padded.shape[0] > target_h else 0
        x_offset = int(rng.integers(0, padded.shape[1] - target_w)) if padded.shape[1] > target_w else 0
        cropped = padded[y_offset:y_offset + target_h, x_offset:x_offset + target_w]
        boxes = _rescaled(other.boxes, ratio, ratio)
        if cfg.bbox_clip_border:
            boxes = _clipped(boxes, origin_h, origin_w)
        if flip:
            boxes = _flipped(boxes, origin_w)
        boxes = _translated(boxes, -x_offset, -y_offset)
        if cfg.bbox_clip_border:
            boxes = _clipped(boxes, target_h, target_w)
        img = (0.5 * sample.img + 0.5 * cropped).astype(np.uint8)
        boxes = np.concatenate([sample.boxes, boxes])
        labels = np.concatenate([sample.labels, other.labels])
        if not cfg.bbox_clip_border:  # clipping touched only the other image's boxes; this drops from both
            boxes, labels = _clip_or_drop(boxes, labels, target_h, target_w, False)
        return replace(sample, img=img, boxes=boxes, labels=labels, source_ids=_sources(sample, others))


# ---- pipelines ------------------------------------------------------------------------------------------------------

_FUNCTIONS: dict[type, Callable[[Any, Sample, Context], Optional[Sample]]] = {
    cfgs.YOLOv5RandomAffine: random_affine,
    cfgs.YOLOv5HSVRandomAug: yolov5_hsv,
    cfgs.YOLOXHSVRandomAug: yolox_hsv,
    cfgs.RandomFlip: random_flip,
    cfgs.YOLOv5KeepRatioResize: keep_ratio_resize,
    cfgs.LetterResize: letter_resize,
    cfgs.RandomResize: random_resize,
    cfgs.RandomCrop: random_crop,
    cfgs.Pad: pad,
}
_MIXERS: dict[type, type[_MixTransform]] = {cfgs.Mosaic: _Mosaic, cfgs.YOLOv5MixUp: _YOLOv5MixUp,
                                            cfgs.YOLOXMixUp: _YOLOXMixUp}


def _step(cfg: cfgs.Transform) -> Step:
    if type(cfg) in _MIXERS:
        return _MIXERS[type(cfg)](cfg)
    if type(cfg) in _FUNCTIONS:
        return functools.partial(_FUNCTIONS[type(cfg)], cfg)
    raise TypeError(f"not a training transform: {type(cfg).__name__}")


def _run(steps: Sequence[Step], sample: Sample, ctx: Context) -> Sample | None:
    for step in steps:
        result = step(sample, ctx)
        if result is None:
            return None
        sample = result
    return sample


def _mixers(steps: Sequence[Step]) -> list[_MixTransform]:
    """Every mixing transform, nested ``pre_transform``s included."""
    found = []
    for step in steps:
        if isinstance(step, _MixTransform):
            found += [step, *_mixers(step.pre_transform)]
    return found


class Pipeline:
    """``LoadImageFromFile`` + ``LoadAnnotations`` + ``transforms`` (e.g.
    ``TRAIN_PIPELINES[recipe].transforms(epoch)``): ``pipeline(index, context)``."""

    def __init__(self, transforms: Sequence[cfgs.Transform]) -> None:
        self.transforms = tuple(transforms)
        self.steps = [_step(cfg) for cfg in self.transforms]

    def __repr__(self) -> str:
        return f"Pipeline({', '.join(type(cfg).__name__ for cfg in self.transforms)})"

    @property
    def stateful(self) -> bool:
        """Whether a transform keeps a cache, so that outputs depend on what this object processed before."""
        return any(mixer.cfg.use_cached for mixer in _mixers(self.steps))

    def reset(self) -> None:
        """Empty every cache (a fresh worker process's state)."""
        for mixer in _mixers(self.steps):
            mixer.cache.clear()

    def __call__(self, index: int, ctx: Context) -> Sample | None:
        return _run(self.steps, ctx.source.load(index), ctx)
