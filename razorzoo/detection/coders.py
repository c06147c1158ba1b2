"""Priors and box coders of the detector heads: where each prediction sits, and how its box deltas become boxes.

:func:`build_coder` turns a recipe's coder config (:mod:`razorzoo.arch.recipes`) into a :class:`YOLOv5BoxCoder` or a
:class:`DistancePointCoder`; both expose ``num_base_priors``, ``needs_objectness``, ``grid_priors`` and ``decode``,
so post-processing never asks which one it has. The tensor operations follow mmdet/MMYOLO in the same order, so
boxes match upstream bit for bit (docs/upstream.md §6.4).
"""
from __future__ import annotations

from typing import Sequence, Union

import torch

from razorzoo.arch.recipes import DistanceCoder, YOLOv5Coder

__all__ = ["anchor_priors", "point_priors", "decode_yolov5", "decode_distance", "YOLOv5BoxCoder",
           "DistancePointCoder", "BoxCoder", "build_coder"]


def anchor_priors(featmap_sizes: Sequence[tuple[int, int]], strides: Sequence[int],
                  anchors: Sequence[Sequence[tuple[float, float]]]) -> torch.Tensor:
    """mmdet ``YOLOAnchorGenerator.grid_priors``: xyxy anchors, rows ordered (level, y, x, anchor)."""
    priors = []
    for (h, w), stride, sizes in zip(featmap_sizes, strides, anchors):
        center = stride / 2.0
        base = torch.tensor([[center - 0.5 * aw, center - 0.5 * ah, center + 0.5 * aw, center + 0.5 * ah]
                             for aw, ah in sizes], dtype=torch.float32)
        xx, yy = _grid(h, w, stride, 0.0)
        shifts = torch.stack([xx, yy, xx, yy], dim=-1)
        priors.append((base[None, :, :] + shifts[:, None, :]).view(-1, 4))
    return torch.cat(priors)


def point_priors(featmap_sizes: Sequence[tuple[int, int]], strides: Sequence[int], offset: float) -> torch.Tensor:
    """mmdet ``MlvlPointGenerator.grid_priors``: ``((x + offset) * s, (y + offset) * s)``, rows ordered
    (level, y, x)."""
    return torch.cat([torch.stack(_grid(h, w, stride, offset), dim=-1)
                      for (h, w), stride in zip(featmap_sizes, strides)])


def _grid(h: int, w: int, stride: int, offset: float) -> tuple[torch.Tensor, torch.Tensor]:
    shift_x = ((torch.arange(w) + offset) * stride).float()
    shift_y = ((torch.arange(h) + offset) * stride).float()
    return shift_x.repeat(h), shift_y.view(-1, 1).repeat(1, w).view(-1)


def decode_yolov5(priors: torch.Tensor, deltas: torch.Tensor, stride: torch.Tensor) -> torch.Tensor:
    """MMYOLO ``YOLOv5BBoxCoder.decode``: sigmoid offsets of up to two strides around the anchor centre, sizes
    ``(2 * sigmoid)^2`` times the anchor's."""
    deltas = deltas.sigmoid()
    x_center = (priors[..., 0] + priors[..., 2]) * 0.5
    y_center = (priors[..., 1] + priors[..., 3]) * 0.5
    w = priors[..., 2] - priors[..., 0]
    h = priors[..., 3] - priors[..., 1]
    x = (deltas[..., 0] - 0.5) * 2 * stride + x_center
    y = (deltas[..., 1] - 0.5) * 2 * stride + y_center
    w = (deltas[..., 2] * 2) ** 2 * w
    h = (deltas[..., 3] * 2) ** 2 * h
    return torch.stack((x - w / 2, y - h / 2, x + w / 2, y + h / 2), dim=-1)


def decode_distance(points: torch.Tensor, distances: torch.Tensor, stride: torch.Tensor) -> torch.Tensor:
    """MMYOLO ``DistancePointBBoxCoder.decode``: (left, top, right, bottom) distances in strides, not clipped."""
    distances = distances * stride[None, :, None]
    return torch.stack([points[..., 0] - distances[..., 0], points[..., 1] - distances[..., 1],
                        points[..., 0] + distances[..., 2], points[..., 1] + distances[..., 3]], dim=-1)


class YOLOv5BoxCoder:
    """Anchor priors + ``YOLOv5BBoxCoder`` (boxes within two strides of the anchor centre); needs objectness."""

    needs_objectness = True

    def __init__(self, config: YOLOv5Coder) -> None:
        self.anchors = config.anchors
        self.num_base_priors = len(config.anchors[0])

    def grid_priors(self, featmap_sizes: Sequence[tuple[int, int]], strides: Sequence[int]) -> torch.Tensor:
        return anchor_priors(featmap_sizes, strides, self.anchors)

    def decode(self, priors: torch.Tensor, deltas: torch.Tensor, stride: torch.Tensor) -> torch.Tensor:
        return decode_yolov5(priors, deltas, stride)


class DistancePointCoder:
    """Point priors + ``DistancePointBBoxCoder`` (left/top/right/bottom distances in strides)."""

    needs_objectness = False
    num_base_priors = 1

    def __init__(self, config: DistanceCoder) -> None:
        self.prior_offset = config.prior_offset

    def grid_priors(self, featmap_sizes: Sequence[tuple[int, int]], strides: Sequence[int]) -> torch.Tensor:
        return point_priors(featmap_sizes, strides, self.prior_offset)

    def decode(self, priors: torch.Tensor, deltas: torch.Tensor, stride: torch.Tensor) -> torch.Tensor:
        return decode_distance(priors, deltas, stride)


BoxCoder = Union[YOLOv5BoxCoder, DistancePointCoder]
_CODERS = {YOLOv5Coder: YOLOv5BoxCoder, DistanceCoder: DistancePointCoder}


def build_coder(config: YOLOv5Coder | DistanceCoder) -> BoxCoder:
    """The runnable coder for a recipe's coder config."""
    return _CODERS[type(config)](config)
