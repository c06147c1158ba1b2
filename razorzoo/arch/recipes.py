"""Typed detector recipes and classifier pre-processing, as frozen data (torch-free).

A :class:`Recipe` is everything about an MMYOLO razor detector that is not the backbone: which backbone outputs feed
the neck, the test pipeline, the box coder, the NMS settings, the class names (docs/upstream.md §1.1-§1.3, §6) and
the head's training settings: loss weights and label assignment (``train_cfg``, docs/upstream.md §9).
The recipe ids are defined here once; ``razorzoo.models.detector`` maps each id to its neck and head modules, and
``razorzoo.detection`` turns the pipeline and coder configs into runnable objects.

:class:`ClassifierPreprocess` is the mmcls/mmpretrain ImageNet test pipeline of a classifier (``ResizeEdge`` on the
short side, ``CenterCrop``, the data preprocessor's normalization); cards carry it as their ``preprocessing:`` block.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Union

from razorzoo.bounded import safe_repr
from razorzoo.errors import RazorzooError

__all__ = ["COCO_CLASSES", "PYRAMID_OUT_INDICES", "Letterbox", "ResizePad", "Normalize", "YOLOv5Coder",
           "DistanceCoder", "TestConfig", "YOLOv5TrainConfig", "YOLOv6TrainConfig", "RTMDetTrainConfig",
           "TrainConfig", "Recipe", "RECIPES", "RECIPE_IDS", "ClassifierPreprocess",
           "CLASSIFIER_PREPROCESS"]

# mmdet CocoDataset.METAINFO["classes"]: label i of every head is COCO_CLASSES[i]
COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)  # fmt: skip

# Backbone outputs at strides 8, 16, 32 in each search space: SPOS layers.1-3; AttentiveNAS layer3, 5, 7; OFA layer3,
# 5, 6 (docs/upstream.md §1.1-§1.3). They depend only on the space's stage strides, so every subnet of a space uses
# the same ones.
PYRAMID_OUT_INDICES = {"spos": (1, 2, 3), "attentive": (2, 4, 6), "ofa": (2, 4, 5)}


@dataclass(frozen=True)
class Letterbox:
    """``YOLOv5KeepRatioResize(size)`` + ``LetterResize(size, allow_scale_up=False)``: centred on a grey canvas."""

    size: int
    pad_value: int = 114


@dataclass(frozen=True)
class ResizePad:
    """``mmdet.Resize(size, keep_ratio=True)`` + ``mmdet.Pad(size)``: padded bottom/right."""

    size: int
    pad_value: int = 114


@dataclass(frozen=True)
class Normalize:
    """The data preprocessor: optional BGR -> RGB, then ``(x - mean) / std`` per channel (in the output order)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    bgr_to_rgb: bool


@dataclass(frozen=True)
class YOLOv5Coder:
    """MMYOLO ``YOLOv5BBoxCoder`` over ``YOLOAnchorGenerator`` priors: per level, the ``(w, h)`` of each anchor."""

    anchors: tuple[tuple[tuple[int, int], ...], ...]


@dataclass(frozen=True)
class DistanceCoder:
    """mmdet ``DistancePointBBoxCoder`` over ``MlvlPointGenerator(offset=prior_offset)`` points."""

    prior_offset: float


@dataclass(frozen=True)
class TestConfig:
    """The head's ``test_cfg``: candidates per image before NMS, score threshold, NMS IoU, detections kept."""

    __test__ = False  # a name pytest would otherwise try to collect

    multi_label: bool
    nms_pre: int
    score_thr: float
    iou_threshold: float
    max_per_img: int
    min_bbox_size: float | None  # None: no size filter (the YOLO heads); 0: drop empty boxes (RTMDet)


@dataclass(frozen=True)
class YOLOv5TrainConfig:
    """``YOLOv5Head`` training (docs/upstream.md §9.5): anchor matching by width/height ratio, neighbouring cells,
    CIoU box loss, IoU-aware objectness with per-level weights, sigmoid class loss.

    ``cls_weight`` is the recipe's ``loss_cls_weight``: the config scales it to ``cls_weight * (num_classes / 80 * 3
    / 3)``, so a head with fewer classes weighs its class loss less (the loss applies that formula).
    """

    cls_weight: float = 0.5
    bbox_weight: float = 0.05
    obj_weight: float = 1.0
    prior_match_thr: float = 4.0
    near_neighbor_thr: float = 0.5
    obj_level_weights: tuple[float, ...] = (4.0, 1.0, 0.4)
    ciou_eps: float = 1e-7


@dataclass(frozen=True)
class YOLOv6TrainConfig:
    """``YOLOv6Head`` training (docs/upstream.md §9.6): ``BatchATSSAssigner(topk=atss_topk)`` before
    ``initial_epoch``, then ``BatchTaskAlignedAssigner(tal_topk, tal_alpha, tal_beta)``; VarifocalLoss (sum, divided
    by the assigned scores' sum) and GIoU ``IoULoss``."""

    initial_epoch: int = 4
    atss_topk: int = 9
    tal_topk: int = 13
    tal_alpha: float = 1.0
    tal_beta: float = 6.0
    tal_eps: float = 1e-7
    vfl_alpha: float = 0.75
    vfl_gamma: float = 2.0
    cls_weight: float = 1.0
    bbox_weight: float = 2.5


@dataclass(frozen=True)
class RTMDetTrainConfig:
    """``RTMDetHead`` training (docs/upstream.md §9.7): ``BatchDynamicSoftLabelAssigner`` (``dsl_topk``,
    ``dsl_iou_weight``, ``dsl_soft_center_radius``), QualityFocalLoss and GIoULoss averaged by the assigned IoUs."""

    dsl_topk: int = 13
    dsl_iou_weight: float = 3.0
    dsl_soft_center_radius: float = 3.0
    qfl_beta: float = 2.0
    cls_weight: float = 1.0
    bbox_weight: float = 2.0


TrainConfig = Union[YOLOv5TrainConfig, YOLOv6TrainConfig, RTMDetTrainConfig]


@dataclass(frozen=True)
class Recipe:
    """Neck/head choice (by ``id``) and test-time settings of one upstream detector config."""

    id: str
    out_indices: tuple[int, ...]  # backbone outputs the upstream detector feeds to its neck
    preprocess: Union[Letterbox, ResizePad]
    normalize: Normalize
    coder: Union[YOLOv5Coder, DistanceCoder]
    test_cfg: TestConfig
    train_cfg: TrainConfig | None = None  # None: no training settings (e.g. a recipe read from an older export)
    strides: tuple[int, ...] = (8, 16, 32)
    class_names: tuple[str, ...] = field(default=COCO_CLASSES, repr=False)

    def at_size(self, size: int) -> "Recipe":
        """The recipe with a ``size x size`` test canvas (the letterbox or resize-and-pad target), as changing the
        config's ``img_scale`` does; a model trained at another size predicts at that size."""
        return replace(self, preprocess=replace(self.preprocess, size=size))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe form (lists for tuples; ``preprocess`` and ``coder`` carry their ``type``), e.g. for an
        exported model's metadata; :meth:`from_dict` reads it back to an equal recipe."""
        data = _plain(asdict(self))
        data["preprocess"]["type"] = type(self.preprocess).__name__
        data["coder"]["type"] = type(self.coder).__name__
        if self.train_cfg is not None:
            data["train_cfg"]["type"] = type(self.train_cfg).__name__
        return data

    @classmethod
    def from_dict(cls, data: Any) -> "Recipe":
        """Parse :meth:`to_dict`'s form; raises :class:`RazorzooError` naming what is wrong."""
        if not isinstance(data, dict):
            raise RazorzooError(f"a recipe must be a mapping, got {safe_repr(data, 60)}")
        data = dict(data)
        typed_parts = [("preprocess", _PREPROCESS_TYPES), ("coder", _CODER_TYPES)]
        if data.get("train_cfg") is not None:
            typed_parts.append(("train_cfg", _TRAIN_TYPES))
        for key, kinds in typed_parts:
            part = data.get(key)
            kind = kinds.get(part.get("type")) if isinstance(part, dict) else None
            if kind is None:
                raise RazorzooError(f"recipe {key} must be a mapping whose type is one of {', '.join(kinds)}")
            data[key] = _typed(kind, {k: v for k, v in part.items() if k != "type"}, f"recipe {key}")
        for key, kind in (("normalize", Normalize), ("test_cfg", TestConfig)):
            data[key] = _typed(kind, data.get(key), f"recipe {key}")
        return _typed(cls, data, "recipe")


_YOLO_NORMALIZE = Normalize(mean=(0.0, 0.0, 0.0), std=(255.0, 255.0, 255.0), bgr_to_rgb=True)  # RGB / 255
_YOLO_TEST_CFG = TestConfig(multi_label=True, nms_pre=30000, score_thr=0.001, iou_threshold=0.65, max_per_img=300,
                            min_bbox_size=None)

RECIPES: dict[str, Recipe] = {
    recipe.id: recipe
    for recipe in (
        Recipe(
            id="yolov5_s",
            out_indices=PYRAMID_OUT_INDICES["spos"],
            preprocess=Letterbox(640),
            normalize=_YOLO_NORMALIZE,
            coder=YOLOv5Coder((((10, 13), (16, 30), (33, 23)), ((30, 61), (62, 45), (59, 119)),
                               ((116, 90), (156, 198), (373, 326)))),
            test_cfg=_YOLO_TEST_CFG,
            train_cfg=YOLOv5TrainConfig(),
        ),
        Recipe(
            id="yolov6_l_d12",
            out_indices=PYRAMID_OUT_INDICES["attentive"],
            preprocess=Letterbox(640),
            normalize=_YOLO_NORMALIZE,
            coder=DistanceCoder(prior_offset=0.5),
            test_cfg=_YOLO_TEST_CFG,
            train_cfg=YOLOv6TrainConfig(),
        ),
        Recipe(
            id="rtmdet_tiny",
            out_indices=PYRAMID_OUT_INDICES["ofa"],
            preprocess=ResizePad(960),
            # the image stays BGR: ImageNet mean/std in BGR order
            normalize=Normalize(mean=(103.53, 116.28, 123.675), std=(57.375, 57.12, 58.395), bgr_to_rgb=False),
            coder=DistanceCoder(prior_offset=0.0),
            test_cfg=TestConfig(multi_label=True, nms_pre=1000, score_thr=0.05, iou_threshold=0.6, max_per_img=100,
                                min_bbox_size=0),
            train_cfg=RTMDetTrainConfig(),
        ),
    )
}
RECIPE_IDS = tuple(RECIPES)
_PREPROCESS_TYPES = {cls.__name__: cls for cls in (Letterbox, ResizePad)}
_CODER_TYPES = {cls.__name__: cls for cls in (YOLOv5Coder, DistanceCoder)}
_TRAIN_TYPES = {cls.__name__: cls for cls in (YOLOv5TrainConfig, YOLOv6TrainConfig, RTMDetTrainConfig)}


def _plain(value: Any) -> Any:
    """Tuples as lists, all the way down (JSON's form)."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _frozen(value: Any) -> Any:
    """Lists as tuples, all the way down (the frozen dataclasses' form)."""
    return tuple(_frozen(item) for item in value) if isinstance(value, list) else value


def _typed(cls: type, data: Any, what: str) -> Any:
    """``cls(**data)`` for a mapping of its fields (lists become tuples), or one clear error."""
    if not isinstance(data, dict):
        raise RazorzooError(f"{what} must be a mapping, got {safe_repr(data, 60)}")
    unknown = sorted(map(str, set(data) - set(cls.__dataclass_fields__)))
    if unknown:
        raise RazorzooError(f"{what}: unknown keys {', '.join(safe_repr(key, 30) for key in unknown[:5])}")
    try:
        return cls(**{key: _frozen(value) for key, value in data.items()})
    except TypeError as exc:  # a missing field
        raise RazorzooError(f"{what}: {safe_repr(str(exc), 120)}") from None

INTERPOLATIONS = ("bilinear", "bicubic", "nearest")  # the resize filters of mmcls's ResizeEdge
RESIZE_BACKENDS = ("cv2", "pillow")


@dataclass(frozen=True)
class ClassifierPreprocess:
    """mmcls ImageNet test pipeline: ``ResizeEdge(resize, edge='short', backend, interpolation)``,
    ``CenterCrop(crop)``, then the data preprocessor (``bgr_to_rgb``, ``(x - mean) / std``).

    ``backend`` matters: ``pillow`` resizes with an antialiasing filter, ``cv2`` samples without one.
    """

    resize: int = 256
    crop: int = 224
    interpolation: str = "bilinear"
    backend: str = "cv2"
    mean: tuple[float, ...] = (123.675, 116.28, 103.53)
    std: tuple[float, ...] = (58.395, 57.12, 57.375)
    bgr_to_rgb: bool = True

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise RazorzooError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}")
        if self.backend not in RESIZE_BACKENDS:
            raise RazorzooError(f"backend must be one of {', '.join(RESIZE_BACKENDS)}")
        if not 1 <= self.crop <= self.resize <= 4096:
            raise RazorzooError("need 1 <= crop <= resize <= 4096")
        if len(self.mean) != 3 or len(self.std) != 3 or not all(s > 0 for s in self.std):
            raise RazorzooError("mean and std need 3 values each, std positive")

    def at_crop(self, crop: int) -> "ClassifierPreprocess":
        """The same pipeline for another input size: crop ``crop``, the short side resized in the same proportion
        (``round(crop * self.resize / self.crop)``: 73 for 64 with the ImageNet 256/224); itself at its own crop."""
        return replace(self, crop=crop, resize=round(crop * self.resize / self.crop))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe form (the card's ``preprocessing:`` block, safetensors metadata)."""
        data = asdict(self)
        data.update(mean=list(self.mean), std=list(self.std))
        return data

    @classmethod
    def from_dict(cls, data: Any) -> "ClassifierPreprocess":
        """Parse the card/metadata form; raises :class:`RazorzooError` naming the bad key."""
        if not isinstance(data, dict):
            raise RazorzooError("must be a mapping (resize, crop, interpolation, backend, mean, std, bgr_to_rgb)")
        unknown = sorted(map(str, set(data) - set(cls.__dataclass_fields__)))
        if unknown:
            raise RazorzooError(f"unknown keys {', '.join(safe_repr(key, 30) for key in unknown[:5])}")
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in ("resize", "crop"):
                if not isinstance(value, int) or isinstance(value, bool):
                    raise RazorzooError(f"{key} must be an integer number of pixels")
            elif key in ("mean", "std"):
                if not isinstance(value, list) or not all(_is_real(v) for v in value):
                    raise RazorzooError(f"{key} must be a list of 3 numbers")
                value = tuple(float(v) for v in value)
            elif key == "bgr_to_rgb":
                if not isinstance(value, bool):
                    raise RazorzooError("bgr_to_rgb must be true or false")
            elif not isinstance(value, str):
                raise RazorzooError(f"{key} must be a string")
            kwargs[key] = value
        return cls(**kwargs)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value and abs(value) < 1e6


# The ImageNet test pipeline of each search space's upstream configs: SPOS (mmrazor
# configs/_base_/settings/imagenet_bs1024_spos.py) resizes with cv2; AttentiveNAS and OFA (imagenet_bs2048_bignas.py,
# imagenet_bs2048_ofa.py) with Pillow. All use the ImageNet mean/std in RGB order.
CLASSIFIER_PREPROCESS = {
    "spos": ClassifierPreprocess(backend="cv2"),
    "attentive": ClassifierPreprocess(backend="pillow"),
    "ofa": ClassifierPreprocess(backend="pillow"),
}
