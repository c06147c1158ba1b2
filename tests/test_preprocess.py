"""Image loading and the two test pipelines vs the MMYOLO pipeline outputs (exact uint8) and hand-derived sizes."""
from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from helpers import DATA, DETECTORS, RECIPE_OF
from razorzoo.arch.recipes import RECIPES, Letterbox
from razorzoo.detection.transforms import DetectionTransform, ImageMeta, letterbox, load_image, resize_pad
from razorzoo.errors import ImageError, RazorzooError

LETTERBOX = DetectionTransform(RECIPES["yolov5_s"].preprocess, RECIPES["yolov5_s"].normalize)


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("model", DETECTORS)
@pytest.mark.parametrize("name", ["image", "image_portrait"])
def test_pipeline_image_and_metas_equal_upstream(model, name):
    recipe = RECIPES[RECIPE_OF[model]]
    cfg = recipe.preprocess
    batch, (meta,) = DetectionTransform(cfg, recipe.normalize)(DATA / model / f"{name}.png")
    expected = cv2.imread(str(DATA / model / f"{name}.pipeline.png"), cv2.IMREAD_COLOR)  # BGR, after resize + pad
    pipeline = letterbox if isinstance(cfg, Letterbox) else resize_pad
    image, _ = pipeline(load_image(DATA / model / f"{name}.png"), cfg.size, cfg.pad_value)
    assert image.dtype == np.uint8 and np.array_equal(image, expected)

    upstream = json.loads((DATA / model / "goldens.json").read_text())["e2e"][name]["model_meta"]
    assert meta.ori_shape == tuple(upstream["ori_shape"]["value"])
    assert meta.img_shape == tuple(upstream["img_shape"]["value"][:2])
    assert meta.scale_factor == tuple(upstream["scale_factor"]["value"])
    assert meta.batch_input_shape == tuple(upstream["batch_input_shape"]["value"])
    assert (meta.pad_param is not None) == ("pad_param" in upstream)
    if meta.pad_param is not None:
        assert meta.pad_param == tuple(upstream["pad_param"]["value"])

    # data preprocessor: YOLO models see RGB / 255, RTMDet BGR with ImageNet-BGR mean/std
    pixels = torch.from_numpy(expected).permute(2, 0, 1).float()
    if recipe.normalize.bgr_to_rgb:
        assert torch.equal(batch[0], pixels.flip(0) / 255)
    else:
        mean = torch.tensor([103.53, 116.28, 123.675]).view(3, 1, 1)
        std = torch.tensor([57.375, 57.12, 58.395]).view(3, 1, 1)
        assert torch.equal(batch[0], (pixels - mean) / std)
    assert batch.shape == (1, 3, cfg.size, cfg.size) and batch.dtype == torch.float32


def test_letterbox_shrinks_with_area_interpolation():
    big = _image(960, 1280)
    image, meta = letterbox(big, 640, 114)
    assert meta == ImageMeta(ori_shape=(960, 1280), img_shape=(640, 640), scale_factor=(0.5, 0.5),
                             batch_input_shape=(640, 640), pad_param=(80.0, 80.0, 0.0, 0.0))
    assert np.array_equal(image[80:560], cv2.resize(big, (640, 480), interpolation=cv2.INTER_AREA))
    assert (image[:80] == 114).all() and (image[560:] == 114).all()


def test_letterbox_truncates_sizes_and_centres_with_upstream_rounding():
    # 333 x 1000: ratio 0.64 -> height int(213.12) = 213; padding 427 -> top round(213 - 0.1) = 213, bottom 214
    image, meta = letterbox(_image(333, 1000), 640, 114)
    assert meta.pad_param == (213.0, 214.0, 0.0, 0.0)
    assert meta.scale_factor == (640 / 1000, 213 / 333)
    # 149 x 200: ratio 3.2 -> 476.8 truncated to 476 (mmcv.imrescale would round to 477)
    image, meta = letterbox(_image(149, 200), 640, 114)
    assert meta.pad_param == (82.0, 82.0, 0.0, 0.0) and meta.scale_factor == (3.2, 476 / 149)
    assert (image[:82] == 114).all() and (image[558:] == 114).all() and not (image[82] == 114).all()
    # 100 x 154: 154 * (640 / 154) = 639.99... truncates to 639, so even the long side gets 1 px (right) padding
    image, meta = letterbox(_image(100, 154), 640, 114)
    assert meta.pad_param == (112.0, 113.0, 0.0, 1.0) and meta.scale_factor == (639 / 154, 415 / 100)
    assert (image[:, 639] == 114).all() and not (image[112:527, 638] == 114).all()


def test_letterbox_keeps_an_image_of_the_target_size():
    square = _image(640, 640)
    image, meta = letterbox(square, 640, 114)
    assert np.array_equal(image, square) and meta.pad_param == (0.0, 0.0, 0.0, 0.0)


def test_resize_pad_rounds_sizes_and_pads_bottom_right():
    # 151 x 200 at 960: ratio 4.8 -> 724.8 rounded (+0.5) to 725; padding only below
    source = _image(151, 200)
    image, meta = resize_pad(source, 960, 114)
    assert meta == ImageMeta(ori_shape=(151, 200), img_shape=(960, 960), scale_factor=(4.8, 725 / 151),
                             batch_input_shape=(960, 960))
    assert np.array_equal(image[:725], cv2.resize(source, (960, 725), interpolation=cv2.INTER_LINEAR))
    assert (image[725:] == 114).all()
    # shrinking is bilinear too (mmdet.Resize), unlike YOLOv5KeepRatioResize
    big = _image(1500, 2000)
    image, meta = resize_pad(big, 960, 114)
    assert np.array_equal(image[:720], cv2.resize(big, (960, 720), interpolation=cv2.INTER_LINEAR))


def test_inputs_path_pil_and_bgr_array_agree(tmp_path):
    path = DATA / "yolov5s-spos_0.33M" / "image.png"
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    unicode_path = tmp_path / "bild_ä.png"
    shutil.copy(path, unicode_path)
    from_pil = load_image(Image.open(path))
    assert np.array_equal(load_image(str(path)), bgr)
    assert np.array_equal(load_image(unicode_path), bgr)
    assert np.array_equal(from_pil, bgr)
    batch, metas = LETTERBOX([path, Image.open(path), bgr])
    assert batch.shape[0] == 3 and torch.equal(batch[0], batch[1]) and torch.equal(batch[0], batch[2])
    assert len(metas) == 3


def test_grey_and_alpha_pil_images_are_converted():
    rgba = Image.new("RGBA", (4, 3), (10, 20, 30, 0))
    assert load_image(rgba)[0, 0].tolist() == [30, 20, 10]
    grey = Image.new("L", (4, 3), 77)
    assert load_image(grey).shape == (3, 4, 3) and (load_image(grey) == 77).all()
    palette = Image.new("P", (2, 2))
    palette.putpalette([200, 100, 50] * 256)
    assert load_image(palette)[1, 1].tolist() == [50, 100, 200]


def test_grey_arrays_are_replicated():
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for array in (grey, grey[..., None]):
        out = load_image(array)
        assert out.shape == (3, 4, 3) and all(np.array_equal(out[..., c], grey) for c in range(3))


@pytest.mark.parametrize("array,message", [
    (np.zeros((4, 4, 3), dtype=np.float32), "uint8"),
    (np.zeros((4, 4, 4), dtype=np.uint8), "alpha"),
    (np.zeros((3, 8, 9), dtype=np.uint8), "transpose"),
    (np.zeros((2, 4, 4, 3), dtype=np.uint8), "H x W x 3"),
    (np.zeros((0, 4, 3), dtype=np.uint8), "empty"),
])
def test_ambiguous_arrays_are_refused_with_a_hint(array, message):
    with pytest.raises(ImageError, match=message) as info:
        load_image(array)
    assert isinstance(info.value, ValueError) and isinstance(info.value, RazorzooError)


def test_missing_and_undecodable_files_name_the_path(tmp_path):
    missing = tmp_path / "nope.jpg"
    with pytest.raises(ImageError, match="nope.jpg"):
        LETTERBOX(missing)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(ImageError, match="broken.png"):
        load_image(broken)
    with pytest.raises(ImageError, match="tensor|Tensor"):
        load_image(torch.zeros(3, 4, 4))
    with pytest.raises(ImageError, match="no images"):
        LETTERBOX([])
    with pytest.raises(ImageError, match="1300x2 image is too elongated"):
        LETTERBOX(np.zeros((2, 1300, 3), dtype=np.uint8))


def test_importing_preprocess_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, razorzoo.detection.transforms; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
