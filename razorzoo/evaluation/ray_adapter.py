"""Detection over a Ray Data dataset: a callable class for ``Dataset.map_batches``.

Ray schedules, retries and scales; this class only loads the model once per worker and turns a batch of rows into
detection columns. Ray itself is not imported here (``map_batches`` accepts any callable class), so razorzoo does not
depend on it: install it with ``pip install 'razorzoo[ray]'``.

    import ray
    from razorzoo.evaluation.ray_adapter import RayDetector

    ds = ray.data.from_items([{"path": p} for p in paths])  # or ray.data.read_images(...) / read_binary_files(...)
    ds = ds.map_batches(RayDetector, fn_constructor_kwargs={"model": "yolov5s-spos_0.33M"},
                        concurrency=4, batch_size=16)
    ds.write_parquet("detections/")
"""
from __future__ import annotations

import os

import numpy as np

from razorzoo.bounded import check_number

__all__ = ["RayDetector"]


class RayDetector:
    """``map_batches`` callable: rows with ``path`` (image files), ``bytes`` (encoded images, as
    ``read_binary_files`` gives) or ``image`` (decoded **RGB** arrays, as ``read_images`` gives) -> the same rows
    with ``boxes`` (K x 4 float32 xyxy, original pixels), ``scores`` (K,) and ``labels`` (K,) added per row.

    The ``bytes``/``image`` input columns are dropped from the output (they can be large); ``path`` is kept.

    Args:
        model: what ``razorzoo.load_detector`` takes (registry name, ``.safetensors`` file, ``hf-hub:`` id).
        backend: passed to ``load_detector`` when given. batch: images per forward pass inside the worker.
        score_thr, iou_thr, max_det: override the recipe's ``test_cfg``. device: where the model runs.
    """

    def __init__(self, model: str | os.PathLike, *, backend: str | None = None, batch: int = 8,
                 score_thr: float | None = None, iou_thr: float | None = None, max_det: int | None = None,
                 device: str = "cpu") -> None:
        from razorzoo.constants import MAX_BATCH
        from razorzoo.evaluation.engine import detection_transform
        from razorzoo.loading import load_detector

        # images per forward pass: checked like every other batch, before the model loads
        self.batch = int(check_number(batch, "RayDetector's batch", minimum=1, maximum=MAX_BATCH, integer=True))
        self.detector = load_detector(model, device=device, backend=backend)
        self.transform = detection_transform(self.detector)
        self.thresholds = {"score_thr": score_thr, "iou_thr": iou_thr, "max_det": max_det}

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from razorzoo.errors import DatasetError
        from razorzoo.evaluation.engine import batches, detect, prepare

        if "path" in rows:
            images = [str(p) for p in rows["path"]]
        elif "bytes" in rows:
            images = [_decode(b) for b in rows["bytes"]]
        elif "image" in rows:
            images = [np.ascontiguousarray(np.asarray(a)[..., ::-1]) for a in rows["image"]]  # RGB -> BGR
        else:
            raise DatasetError(f"RayDetector needs a 'path', 'bytes' or 'image' column, got {sorted(rows)}")
        found = []
        for group in batches(((i, *prepare(image, self.transform)) for i, image in enumerate(images)), self.batch):
            found += detect(self.detector, self.transform, [c for _, c, _ in group], [m for _, _, m in group],
                            **self.thresholds)
        out = {key: value for key, value in rows.items() if key not in ("bytes", "image")}
        for column in ("boxes", "scores", "labels"):
            out[column] = _ragged([getattr(d, column).cpu().numpy() for d in found])
        return out


def _decode(data: bytes) -> np.ndarray:
    import cv2

    from razorzoo.errors import ImageError

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ImageError(f"cannot decode {len(data)} bytes as an image")
    return image


def _ragged(arrays: list[np.ndarray]) -> np.ndarray:
    """One row per image, each a differently sized array (an object array, which Ray stores as ragged tensors)."""
    column = np.empty(len(arrays), dtype=object)
    column[:] = arrays
    return column
