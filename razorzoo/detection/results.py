"""Detection results of one image: boxes, scores, labels, and the helpers people need next (filter, COCO json, draw)."""
from __future__ import annotations

import colorsys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import torch

from razorzoo.wording import count

if TYPE_CHECKING:
    from PIL import Image

    from razorzoo.detection.transforms import ImageInput

__all__ = ["COCO_CATEGORY_IDS", "Detections"]

# category_id of each of the 80 COCO training classes, in label order (the COCO json skips ids 12, 26, 29, 30, ...)
COCO_CATEGORY_IDS = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33, 34,
    35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63,
    64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90,
)  # fmt: skip


@dataclass(frozen=True, repr=False, eq=False)
class Detections:
    """Detections in one image, best first.

    Attributes:
        boxes: ``(K, 4)`` float32 ``x1, y1, x2, y2`` in original-image pixels.
        scores: ``(K,)`` float32 confidences. labels: ``(K,)`` int64 class indices.
        class_names: the name of every class index (COCO-80 for the upstream detectors).
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        k = len(self.scores)
        if self.boxes.shape != (k, 4) or self.labels.shape != (k,) or self.scores.shape != (k,):
            raise ValueError(f"Detections need boxes (K, 4), scores (K,) and labels (K,), got "
                             f"{tuple(self.boxes.shape)}, {tuple(self.scores.shape)}, {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return len(self.scores)

    def __getitem__(self, index: int | slice | Sequence[int] | torch.Tensor) -> "Detections":
        """A subset: an int, a slice, a list of ints, an index tensor or a boolean mask; always a ``Detections``."""
        if isinstance(index, int):
            if not -len(self) <= index < len(self):
                raise IndexError(f"detection index {index} out of range for {count(len(self), 'detection')}")
            index = slice(index % len(self), index % len(self) + 1)
        elif not isinstance(index, (slice, torch.Tensor)):
            index = torch.as_tensor(index)  # lists, numpy index arrays or boolean masks
            if index.dtype != torch.bool:
                index = index.long()
        return Detections(self.boxes[index], self.scores[index], self.labels[index], self.class_names)

    @property
    def names(self) -> list[str]:
        """The class name of each detection."""
        return [self.class_names[i] for i in self.labels.tolist()]

    def filter(self, classes: Iterable[str | int] | None = None, min_score: float | None = None) -> "Detections":
        """Only detections of ``classes`` (names or indices) scoring at least ``min_score``."""
        keep = torch.ones(len(self), dtype=torch.bool, device=self.labels.device)
        if classes is not None:
            wanted = [self._class_index(c) for c in classes]
            keep &= torch.isin(self.labels, torch.tensor(wanted, dtype=self.labels.dtype, device=self.labels.device))
        if min_score is not None:
            keep &= self.scores >= min_score
        return self[keep]

    def _class_index(self, name_or_index: str | int) -> int:
        if isinstance(name_or_index, str):
            if name_or_index not in self.class_names:
                raise ValueError(f"unknown class name {name_or_index!r}; class names are {list(self.class_names)}")
            return self.class_names.index(name_or_index)
        if not 0 <= int(name_or_index) < len(self.class_names):
            raise ValueError(f"class index {name_or_index} out of range 0..{len(self.class_names) - 1}")
        return int(name_or_index)

    def to_dict(self) -> dict[str, list]:
        """Plain lists (JSON-serializable): ``boxes`` (xyxy), ``scores``, ``labels``, ``names``."""
        return {"boxes": self.boxes.tolist(), "scores": self.scores.tolist(), "labels": self.labels.tolist(),
                "names": self.names}

    def to_coco(self, image_id: int | str, category_ids: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """COCO results-file entries: ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``.

        ``category_ids[label]`` is the category id written for each label; by default the real COCO ids of the
        80 classes (label 11 "stop sign" -> 13), which ``pycocotools`` expects.
        """
        if category_ids is None:
            if len(self.class_names) != len(COCO_CATEGORY_IDS):
                raise ValueError(f"these detections have {len(self.class_names)} classes, not the 80 COCO classes: "
                                 "pass category_ids (one COCO category id per class index)")
            category_ids = COCO_CATEGORY_IDS
        if len(category_ids) != len(self.class_names):
            raise ValueError(f"category_ids has {len(category_ids)} entries for {len(self.class_names)} classes")
        xywh = torch.cat([self.boxes[:, :2], self.boxes[:, 2:] - self.boxes[:, :2]], dim=1)
        return [{"image_id": image_id, "category_id": int(category_ids[label]), "bbox": box, "score": score}
                for box, score, label in zip(xywh.tolist(), self.scores.tolist(), self.labels.tolist())]

    def draw(self, image: "ImageInput", *, line_width: int | None = None) -> "Image.Image":
        """``image`` (path, PIL image or BGR array, as for ``predict``) with each box and ``"label score"`` drawn in
        a colour per class. Returns a new RGB PIL image."""
        from PIL import Image, ImageDraw, ImageFont

        from razorzoo.detection.transforms import load_image

        canvas = Image.fromarray(load_image(image)[..., ::-1].copy())
        width = line_width or max(1, round(max(canvas.size) / 300))
        font = ImageFont.load_default(size=max(10, round(max(canvas.size) / 60)))  # Pillow >= 10.1: scalable
        draw = ImageDraw.Draw(canvas)
        # lowest score first, so the best boxes end up on top
        for i in reversed(range(len(self))):
            x1, y1, x2, y2 = self.boxes[i].tolist()
            label = int(self.labels[i])
            color = _class_color(label)
            draw.rectangle((x1, y1, x2, y2), outline=color, width=width)
            text = f"{self.class_names[label]} {float(self.scores[i]):.2f}"
            left, top, right, bottom = draw.textbbox((x1, y1), text, font=font)
            top_y = y1 - (bottom - top) if y1 - (bottom - top) >= 0 else y1  # inside the box at the top edge
            draw.rectangle((x1, top_y, x1 + right - left, top_y + bottom - top), fill=color)
            draw.text((x1, top_y - (top - y1)), text, fill=(255, 255, 255) if sum(color) < 450 else (0, 0, 0),
                      font=font)
        return canvas

    def __repr__(self) -> str:
        lines = [f"Detections({len(self)} boxes)"]
        for i in range(min(len(self), 5)):
            x1, y1, x2, y2 = self.boxes[i].tolist()
            lines.append(f"  {self.class_names[int(self.labels[i])]:<14} {float(self.scores[i]):.3f}  "
                         f"[{x1:.1f}, {y1:.1f}, {x2:.1f}, {y2:.1f}]")
        if len(self) > 5:
            lines.append(f"  ... {len(self) - 5} more")
        return "\n".join(lines)


def _class_color(label: int) -> tuple[int, int, int]:
    """A saturated colour per class; golden-ratio hue steps keep neighbouring labels far apart on the wheel."""
    hue = (label * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)
