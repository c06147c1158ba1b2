"""Image loading and the two test pipelines vs the MMYOLO pipeline outputs (exact uint8) and hand-derived sizes."""
from __future__ import annotations

import json
import shutil
import warnings

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


# -- what each step does at its edges (written from mutation testing: each test fails for a plausible slip) -------
def test_letterbox_interpolation_follows_the_ratio_not_the_image():
    """Shrinking is INTER_AREA, growing INTER_LINEAR, each at a ratio where the other gives other pixels (an exact
    halving is the same 2 x 2 mean either way); an exact doubling is resized too."""
    for shape, size, flag in (((750, 1000), (640, 480), cv2.INTER_AREA),  # ratio 0.64
                              ((300, 400), (640, 480), cv2.INTER_LINEAR),  # ratio 1.6
                              ((240, 320), (640, 480), cv2.INTER_LINEAR)):  # ratio 2
        source = _image(*shape, seed=shape[0])
        image, meta = letterbox(source, 640, 114)
        expected = cv2.resize(source, size, interpolation=flag)
        other = cv2.resize(source, size, interpolation=cv2.INTER_LINEAR if flag == cv2.INTER_AREA else cv2.INTER_AREA)
        assert not np.array_equal(expected, other)  # the case tells the two apart
        assert meta.pad_param == (80.0, 80.0, 0.0, 0.0) and np.array_equal(image[80:560], expected), shape


def test_the_thinnest_image_a_pipeline_takes_keeps_one_pixel():
    """A short side of exactly one pixel after resizing is allowed; one less is refused."""
    for pipeline in (letterbox, resize_pad):
        image, meta = pipeline(_image(1, 640), 640, 114)
        assert image.shape == (640, 640, 3) and meta.ori_shape == (1, 640)
        with pytest.raises(ImageError, match="1281x2 image is too elongated"):
            pipeline(_image(2, 1281), 640, 114)


def test_resize_edge_sets_the_short_side_and_truncates_the_long_one():
    from razorzoo.detection.transforms import resize_edge

    portrait, landscape, square = _image(300, 200, seed=1), _image(200, 300, seed=2), _image(50, 50, seed=3)
    # 200 -> 256: the long side 300 * 1.28 = 384; 7 -> 256 on a 7 x 10 image: 365.71... truncated to 365
    assert resize_edge(portrait, 256).shape == (384, 256, 3) and resize_edge(landscape, 256).shape == (256, 384, 3)
    assert resize_edge(_image(10, 7), 256).shape == (365, 256, 3)
    assert resize_edge(_image(7, 10), 256).shape == (256, 365, 3) and resize_edge(square, 64).shape == (64, 64, 3)
    # the defaults are mmcls's: bilinear, cv2
    assert np.array_equal(resize_edge(portrait, 256), cv2.resize(portrait, (256, 384), interpolation=cv2.INTER_LINEAR))
    assert resize_edge(portrait, 1).shape == (1, 1, 3) and resize_edge(landscape, 2).shape == (2, 3, 3)
    with pytest.raises(ImageError) as info:
        resize_edge(portrait, 0)
    assert str(info.value) == "the short side must be resized to at least 1 pixel, not 0"
    for options in ({"interpolation": "area"}, {"backend": "CV2"}, {"backend": "pil"}):
        with pytest.raises(ImageError) as info:
            resize_edge(portrait, 256, **options)
        wanted = {"interpolation": "bilinear", "backend": "cv2", **options}
        assert str(info.value) == ("resize_edge takes interpolation bilinear/bicubic/nearest and backend cv2/pillow, "
                                   f"not {wanted['interpolation']!r} and {wanted['backend']!r}")


@pytest.mark.parametrize("interpolation, cv2_flag, pil_filter", [
    ("bilinear", cv2.INTER_LINEAR, Image.BILINEAR), ("bicubic", cv2.INTER_CUBIC, Image.BICUBIC),
    ("nearest", cv2.INTER_NEAREST, Image.NEAREST)])
def test_resize_edge_uses_the_filter_asked_for_on_each_backend(interpolation, cv2_flag, pil_filter):
    from razorzoo.detection.transforms import resize_edge

    source = _image(90, 120, seed=4)  # 90 -> 64 shrinks and 90 -> 160 grows
    for size in (64, 160):
        wide = round(size * 120 / 90 - 0.5) if size * 120 % 90 else size * 120 // 90
        found_cv2 = resize_edge(source, size, interpolation, "cv2")
        assert np.array_equal(found_cv2, cv2.resize(source, (wide, size), interpolation=cv2_flag)), size
        found_pil = resize_edge(source, size, interpolation, "pillow")
        assert np.array_equal(found_pil, np.asarray(Image.fromarray(source).resize((wide, size), pil_filter))), size
        others = [flag for flag in (cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_NEAREST) if flag != cv2_flag]
        assert all(not np.array_equal(found_cv2, cv2.resize(source, (wide, size), interpolation=flag))
                   for flag in others)


def test_center_crop_offsets_round_half_to_even_and_start_at_zero():
    from razorzoo.detection.transforms import center_crop

    image = _image(230, 301, seed=5)
    # rows: (230 - 224) / 2 = 3; columns: (301 - 224) / 2 = 38.5 -> 38 (half to even)
    assert np.array_equal(center_crop(image, 224), image[3:227, 38:262])
    # a side equal to the crop, or one pixel longer (0.5 rounds to 0), starts at 0
    assert np.array_equal(center_crop(image[:224, :225], 224), image[:224, :224])
    assert np.array_equal(center_crop(image[:225, :224], 224), image[:224, :224])


def test_batches_stay_float32_whatever_torchs_default_dtype():
    from razorzoo.arch.recipes import Normalize
    from razorzoo.detection.transforms import normalize

    pixels = torch.from_numpy(_image(4, 5)).permute(2, 0, 1)
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        assert normalize(pixels, Normalize((1.0, 2.0, 3.0), (4.0, 5.0, 6.0), True)).dtype == torch.float32
        batch, _ = LETTERBOX(_image(20, 30))
        assert batch.dtype == torch.float32
    finally:
        torch.set_default_dtype(saved)


def test_normalize_keeps_the_pixels_device():
    """The mean and std go to the pixels' device (the meta device stands in for a GPU: mixing devices fails)."""
    from razorzoo.arch.recipes import Normalize
    from razorzoo.detection.transforms import normalize

    pixels = torch.zeros(2, 3, 4, 5, dtype=torch.uint8, device="meta")
    for bgr_to_rgb in (True, False):
        out = normalize(pixels, Normalize((1.0, 2.0, 3.0), (4.0, 5.0, 6.0), bgr_to_rgb))
        assert out.device.type == "meta" and out.shape == (2, 3, 4, 5) and out.dtype == torch.float32


def test_collate_pads_canvases_of_other_shapes_to_the_largest_height_and_width():
    """Loaders collate canvases of their own shapes (batch shapes): height and width are each the largest."""
    small, wide = _image(32, 64, seed=6), _image(48, 40, seed=7)
    metas = [ImageMeta((1, 1), (32, 64), (1.0, 1.0), (32, 64)), ImageMeta((1, 1), (48, 40), (1.0, 1.0), (48, 40))]
    batch, out = LETTERBOX.collate([small, wide], metas)
    assert batch.shape == (2, 3, 48, 64) and [m.batch_input_shape for m in out] == [(48, 64), (48, 64)]
    for i, canvas in enumerate((small, wide)):
        h, w = canvas.shape[:2]
        pixels = torch.from_numpy(canvas).permute(2, 0, 1).flip(0).float() / 255  # YOLOv5: RGB / 255
        assert torch.equal(batch[i, :, :h, :w], pixels)
        assert not batch[i, :, h:].any() and not batch[i, :, :, w:].any()  # zeros, after normalization


def _refusal(image) -> str:
    with pytest.raises(ImageError) as info:
        load_image(image)
    return str(info.value)


def test_each_refusal_says_in_full_what_to_pass_instead():
    assert _refusal("") == "the image path is empty; pass an image file"
    assert _refusal(object()) == ("cannot use an object of type 'object' as an image; pass a file path, a PIL image "
                                  "or an H x W x 3 uint8 BGR numpy array (e.g. cv2.imread(path))")
    assert _refusal(np.zeros((4, 4, 3), np.float32)) == (
        "image array has dtype float32; pass uint8 pixels in 0..255 "
        "(e.g. (x * 255).round().astype(np.uint8) for floats in 0..1)")
    assert _refusal(np.zeros((4, 4, 4), np.uint8)) == (
        "image array has 4 channels; drop the alpha channel and pass H x W x 3 BGR "
        "(cv2.cvtColor(x, cv2.COLOR_BGRA2BGR) or cv2.COLOR_RGBA2BGR, depending on its channel order)")
    # the channels-first hint only where the array looks channels-first
    assert _refusal(np.zeros((3, 8, 9), np.uint8)) == (
        "image array has shape (3, 8, 9); pass H x W x 3 uint8 BGR; it looks channels-first: use x.transpose(1, 2, 0)")
    assert _refusal(np.zeros((5, 8, 9), np.uint8)) == "image array has shape (5, 8, 9); pass H x W x 3 uint8 BGR"
    assert _refusal(np.zeros((3, 4, 4, 3), np.uint8)) == (
        "image array has shape (3, 4, 4, 3); pass H x W x 3 uint8 BGR")
    with pytest.raises(ImageError) as info:
        LETTERBOX([])
    assert str(info.value) == "no images given"


def _png_header(width: int, height: int) -> bytes:
    """A PNG's signature, IHDR chunk and the start of a 100-byte IDAT chunk: the size is declared, the pixel data is
    cut after 10 bytes."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    header = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + header + struct.pack(">I", 100) + b"IDAT" + bytes(10)


def test_the_pixel_limit_is_inclusive_and_a_truncated_file_says_what_pillow_found(tmp_path):
    """At exactly MAX_IMAGE_PIXELS the header passes (the file is then refused as truncated, with Pillow's words);
    one row more is refused as too large, before any decoding."""
    from razorzoo.detection.transforms import MAX_IMAGE_PIXELS

    at_limit, above = tmp_path / "at_limit.png", tmp_path / "above.png"
    at_limit.write_bytes(_png_header(16384, MAX_IMAGE_PIXELS // 16384))
    above.write_bytes(_png_header(16384, MAX_IMAGE_PIXELS // 16384 + 1))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # 2^27 pixels: Pillow's own warning
            with Image.open(at_limit) as pil:
                pil.verify()
    except Exception as exc:  # noqa: BLE001 - whatever Pillow says, razorzoo quotes
        pillow_says = str(exc)
    assert pillow_says
    message = _refusal(at_limit)
    assert message.startswith(f"'{at_limit}' is truncated or corrupt (") and pillow_says[:60] in message, message
    assert _refusal(above).startswith(f"'{above}' is 16384x{MAX_IMAGE_PIXELS // 16384 + 1}: more than ")


def test_reading_a_file_leaves_opencvs_log_level_as_it_was(tmp_path):
    """OpenCV is silenced while it decodes (the ImageError is the one line a user sees), then restored."""
    broken = tmp_path / "broken.bmp"
    cv2.imwrite(str(broken), _image(8, 8))
    data = broken.read_bytes()
    broken.write_bytes(data[:54] + b"\0" * 4)  # a BMP header Pillow accepts, then too few pixels for OpenCV
    saved = cv2.utils.logging.getLogLevel()
    try:
        for level in (cv2.utils.logging.LOG_LEVEL_WARNING, cv2.utils.logging.LOG_LEVEL_ERROR):
            cv2.utils.logging.setLogLevel(level)
            load_image(DATA / "yolov5s-spos_0.33M" / "image.png")
            assert cv2.utils.logging.getLogLevel() == level
            with pytest.raises(ImageError):
                load_image(broken)
            assert cv2.utils.logging.getLogLevel() == level
    finally:
        cv2.utils.logging.setLogLevel(saved)
