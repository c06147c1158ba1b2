"""Each training transform on hand-made images with its random draws forced (``helpers.draws.Draws``): boxes move
exactly as the pixels do, boxes that leave the canvas are clipped or dropped by upstream's rules, and each transform
makes exactly upstream's draws. Expected values are worked out by hand in the comments."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from helpers.draws import Draws
from razorzoo.arch import train_pipelines as cfg
from razorzoo.errors import DatasetError
from razorzoo.training.dataset import Sample
from razorzoo.training.pipeline import make_sample
from razorzoo.training.transforms import Context, Pipeline

GREY = (60, 60, 60)
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255)]


def painted(width: int, height: int, boxes=(), background=GREY) -> Sample:
    """A ``width x height`` image whose box ``i`` is filled with ``COLOURS[i]``; label ``i``."""
    img = np.empty((height, width, 3), np.uint8)
    img[:] = background
    for colour, (x1, y1, x2, y2) in zip(COLOURS, boxes):
        img[int(y1):int(y2), int(x1):int(x2)] = colour
    return Sample(img=img, boxes=np.array(boxes, np.float32).reshape(-1, 4),
                  labels=np.arange(len(boxes), dtype=np.int64), img_id=7, path=Path("x.png"),
                  ori_shape=(height, width), source_ids=(7,))


def assert_painted(sample: Sample, box, colour, margin: int = 1) -> None:
    """The interior of ``box`` (``margin`` pixels in) has ``colour``, the ring just outside it does not."""
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    inner = sample.img[y1 + margin:y2 - margin, x1 + margin:x2 - margin]
    assert inner.size and (inner == colour).all(), f"{box} is not filled with {colour}"
    h, w = sample.img.shape[:2]
    ring = [sample.img[y, x] for y in (y1 - 1 - margin, y2 + margin) for x in range(x1, x2) if 0 <= y < h]
    ring += [sample.img[y, x] for x in (x1 - 1 - margin, x2 + margin) for y in range(y1, y2) if 0 <= x < w]
    assert not any((pixel == colour).all() for pixel in ring), f"{colour} spills out of {box}"


def run(config, sample: Sample, *script, source=()) -> Sample | None:
    """``config``'s transform on ``sample`` with forced draws; every scripted draw must be used."""
    draws = Draws(*script)
    out = Pipeline([config]).steps[0](sample, Context(draws, ListSource(source)))
    assert draws.done(), f"draws left unused: {draws.script}"
    return out


class ListSource:
    """Samples held in memory, as a dataset serves them."""

    def __init__(self, samples) -> None:
        self.samples = list(samples)

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> Sample:
        return self.samples[index]


# ---- RandomFlip ------------------------------------------------------------------------------------------------


def test_flip_mirrors_pixels_and_boxes():
    sample = painted(100, 60, [(10, 20, 30, 50)])
    out = run(cfg.RandomFlip(0.5), sample, ("random", (), 0.2))  # 0.2 < 0.5: flipped
    assert np.array_equal(out.img, sample.img[:, ::-1])
    np.testing.assert_array_equal(out.boxes, [[70, 20, 90, 50]])  # x -> 100 - x
    assert_painted(out, out.boxes[0], COLOURS[0])
    for u in (0.5, 0.9):  # np.random.choice flips when the draw is below the cumulative 0.5
        assert run(cfg.RandomFlip(0.5), sample, ("random", (), u)) is sample


# ---- YOLOv5KeepRatioResize + LetterResize ------------------------------------------------------------------------


def test_keep_ratio_resize_scales_the_long_side_with_truncated_sizes():
    out = run(cfg.YOLOv5KeepRatioResize((640, 640)), painted(320, 160, [(10, 20, 30, 40)]))
    assert out.img.shape == (320, 640, 3)  # ratio 2 (bilinear)
    np.testing.assert_array_equal(out.boxes, [[20, 40, 60, 80]])
    assert_painted(out, out.boxes[0], COLOURS[0], margin=2)
    out = run(cfg.YOLOv5KeepRatioResize((640, 640)), painted(1280, 480, [(100, 40, 300, 240)]))
    assert out.img.shape == (240, 640, 3)  # ratio 0.5 with INTER_AREA: flat blocks keep their exact colour
    np.testing.assert_array_equal(out.boxes, [[50, 20, 150, 120]])
    assert_painted(out, out.boxes[0], COLOURS[0])
    out = run(cfg.YOLOv5KeepRatioResize((640, 640)), painted(1000, 333))
    assert out.img.shape == (213, 640, 3)  # 333 * 0.64 = 213.12, truncated
    out = run(cfg.YOLOv5KeepRatioResize((640, 640)), painted(1077, 400))
    assert out.img.shape == (237, 639, 3)  # 1077 * (640 / 1077) is 639.99999999999989 in floating point: 639


def test_letter_resize_after_a_truncated_keep_ratio_resize():
    shrunk = run(cfg.YOLOv5KeepRatioResize((640, 640)), painted(1077, 400, [(0, 100, 1077, 300)]))
    up = run(cfg.LetterResize((640, 640), allow_scale_up=True), shrunk)
    # ratio min(640 / 237, 640 / 639) = 1.00156: 639 -> 640 wide, round(237.37) = 237 high, rows 201..438
    assert (up.img[201:438, :, 0] != 114).all() and (up.img[:201] == 114).all() and (up.img[438:] == 114).all()
    kept = run(cfg.LetterResize((640, 640), allow_scale_up=False), shrunk)
    assert (kept.img[:, 639] == 114).all() and (kept.img[201:438, 638] != 114).all()  # one column of padding


def test_letter_resize_scales_up_only_when_allowed_and_centres_with_upstreams_rule():
    sample = painted(320, 160, [(10, 20, 30, 40)])
    up = run(cfg.LetterResize((640, 640), allow_scale_up=True), sample)
    # ratio min(640/160, 640/320) = 2 -> 640 x 320, 320 rows of padding: top int(round(160 - 0.1)) = 160
    assert up.img.shape == (640, 640, 3) and (up.img[:160] == 114).all() and (up.img[480:] == 114).all()
    np.testing.assert_array_equal(up.boxes, [[20, 200, 60, 240]])
    assert_painted(up, up.boxes[0], COLOURS[0], margin=2)
    kept = run(cfg.LetterResize((640, 640), allow_scale_up=False), sample)
    # no upscaling: 320 x 160 in the middle, top 240, left 160
    assert (kept.img[240:400, 160:480] == sample.img).all() and (kept.img[:240] == 114).all()
    np.testing.assert_array_equal(kept.boxes, [[170, 260, 190, 280]])
    rounded = run(cfg.LetterResize((640, 640), allow_scale_up=True), painted(300, 201))
    # ratio 640 / 300: 201 rows -> round(428.8) = 429 (not truncated), top int(round(211 // 2 - 0.1)) = 105
    assert (rounded.img[:, 320, 0] != 114).sum() == 429 and (rounded.img[104, 320] == 114).all()
    odd = run(cfg.LetterResize((640, 640), allow_scale_up=False), painted(640, 637, [(0, 0, 640, 637)]))
    # 3 rows of padding: top int(round(3 // 2 - 0.1)) = 1, bottom 2; the box is clipped to nothing it did not cover
    assert (odd.img[0] == 114).all() and (odd.img[-2:] == 114).all() and (odd.img[1] == COLOURS[0]).all()
    np.testing.assert_array_equal(odd.boxes, [[0, 1, 640, 638]])


# ---- YOLOv5RandomAffine ------------------------------------------------------------------------------------------

MOSAIC_AFFINE = cfg.YOLOv5RandomAffine(max_rotate_degree=0.0, max_shear_degree=0.0, scaling_ratio_range=(0.5, 1.5),
                                       border=(-320, -320))


def affine_draws(scale: float, tx: float = 0.5, ty: float = 0.5, rotation: float = 0.0, max_rotation=0.0):
    """Upstream's draw order: rotation, scale, x shear, y shear, x translation, y translation."""
    return [("uniform", (-max_rotation, max_rotation), rotation), ("uniform", (0.5, 1.5), scale),
            ("uniform", (-0.0, 0.0), 0.0), ("uniform", (-0.0, 0.0), 0.0), ("uniform", (0.4, 0.6), tx),
            ("uniform", (0.4, 0.6), ty)]


def test_affine_scales_about_the_centre_and_translates_into_the_smaller_canvas():
    sample = painted(1280, 1280, [(400, 600, 800, 1000)])
    out = run(MOSAIC_AFFINE, sample, *affine_draws(0.5))
    # canvas 1280 - 2 * 320 = 640; x' = 0.5 * (x - 640) + 0.5 * 640 = x / 2
    assert out.img.shape == (640, 640, 3)
    np.testing.assert_allclose(out.boxes, [[200, 300, 400, 500]], atol=1e-4)
    assert_painted(out, out.boxes[0], COLOURS[0])
    out = run(MOSAIC_AFFINE, sample, *affine_draws(1.5, tx=0.45, ty=0.6))
    # x' = 1.5 * (x - 640) + 0.45 * 640 = 1.5 x - 672; y' = 1.5 * (y - 640) + 384 = 1.5 y - 576
    np.testing.assert_allclose(out.boxes, [[0, 324, 528, 640]], atol=1e-3)  # clipped at 0 and 640
    assert (out.img[330:635, 5:520] == COLOURS[0]).all()


def test_affine_drops_tiny_thin_and_mostly_lost_boxes_like_upstream():
    boxes = [(600, 600, 603, 700),  # 1.5 px wide after scaling: not > min_bbox_size 2
             (100, 100, 1100, 140),  # 500 x 20: aspect ratio 25, not < 20
             (0, 600, 140, 700),  # 70 x 50 scaled, 6 x 50 left after clipping: area ratio 0.086, not > 0.1
             (0, 800, 160, 900),  # 80 x 50 scaled, 16 x 50 left: ratio 0.2, kept (clipped)
             (300, 300, 340, 340)]  # kept whole
    out = run(MOSAIC_AFFINE, painted(1280, 1280, boxes), *affine_draws(0.5, tx=0.4))
    # x' = x / 2 - 64, y' = y / 2
    np.testing.assert_allclose(out.boxes, [[0, 400, 16, 450], [86, 150, 106, 170]], atol=1e-4)
    np.testing.assert_array_equal(out.labels, [3, 4])


def test_affine_filters_are_strict_inequalities():
    plain = cfg.YOLOv5RandomAffine(max_rotate_degree=0.0, max_shear_degree=0.0)
    boxes = [(100, 100, 102, 130), (200, 100, 202.5, 130),  # 2 px wide: dropped (not > 2); 2.5: kept
             (100, 200, 300, 210), (100, 300, 299, 310),  # aspect 20: dropped (not < 20); 19.9: kept
             (-90, 400, 10, 450), (-89, 500, 11, 550)]  # 10% left after clipping: dropped (not > 0.1); 10.1%: kept
    draws = [("uniform", (-0.0, 0.0), 0.0), ("uniform", (0.5, 1.5), 1.0), ("uniform", (-0.0, 0.0), 0.0),
             ("uniform", (-0.0, 0.0), 0.0), ("uniform", (0.4, 0.6), 0.5), ("uniform", (0.4, 0.6), 0.5)]
    out = run(plain, painted(640, 640, boxes), *draws)  # the identity
    np.testing.assert_array_equal(out.labels, [1, 3, 5])
    np.testing.assert_allclose(out.boxes[2], [0, 500, 11, 550])


def test_affine_rotation_maps_box_corners_to_their_hull():
    affine = cfg.YOLOv5RandomAffine(max_rotate_degree=90.0, max_shear_degree=0.0, max_translate_ratio=0.1)
    sample = painted(640, 640, [(100, 50, 200, 150)])
    out = run(affine, sample, *affine_draws(1.0, rotation=90.0, max_rotation=90.0))
    # about the centre (320, 320): (x, y) -> (640 - y, x)
    np.testing.assert_allclose(out.boxes, [[490, 100, 590, 200]], atol=1e-3)
    assert_painted(out, out.boxes[0], COLOURS[0])


# ---- HSV ---------------------------------------------------------------------------------------------------------


def test_yolov5_hsv_multiplies_value_and_rotates_hue():
    sample = painted(20, 10, [(10, 0, 20, 10)], background=(200, 200, 200))  # grey | pure blue
    out = run(cfg.YOLOv5HSVRandomAug(), sample, ("uniform", (-1, 1, 3), np.array([1.0, 0.0, -0.5])))
    # gains (1.015, 1, 0.8): grey V 200 -> 160; blue H 120 -> int(121.8) = 121, i.e. 242 degrees, and V 255 -> 204:
    # B = V = 204, G = 0, R = 204 * (242 / 60 - 4) = 6.8
    assert (out.img[:, :10] == 160).all()
    b, g, r = (int(v) for v in out.img[5, 15])
    assert (b, g) == (204, 0) and r in (6, 7)
    np.testing.assert_array_equal(out.boxes, sample.boxes)


def test_yolox_hsv_adds_truncated_integer_offsets_where_the_mask_says():
    sample = painted(20, 10, [(10, 0, 20, 10)], background=(100, 100, 100))
    out = run(cfg.YOLOXHSVRandomAug(), sample, ("uniform", (-1, 1, 3), np.array([0.99, 0.5, 0.5])),
              ("integers", (0, 2, 3), np.array([1, 0, 1])))
    # offsets int16(4.95, 15 * 0, 15) = (4, 0, 15): grey V 100 -> 115, S stays 0; blue H 120 -> 124, V 255 stays
    assert (out.img[:, :10] == 115).all()
    hue, sat, val = cv2.cvtColor(out.img[5:6, 15:16], cv2.COLOR_BGR2HSV)[0, 0]
    assert abs(int(hue) - 124) <= 1 and sat == 255 and val == 255


# ---- RandomResize, RandomCrop, Pad -------------------------------------------------------------------------------


def test_random_resize_draws_a_scale_and_rescales_with_rounded_sizes():
    sample = painted(200, 100, [(40, 20, 80, 60)])
    out = run(cfg.RandomResize((100, 100), (0.5, 2.0)), sample, ("random", (), 0.5))
    # ratio 0.5 * 1.5 + 0.5 = 1.25 -> scale 125; factor min(125 / 200, 125 / 100) = 0.625 -> 125 x int(63.0) = 63
    assert out.img.shape == (63, 125, 3)
    np.testing.assert_allclose(out.boxes, [[25, 12.6, 50, 37.8]], rtol=1e-6)  # x * 125/200, y * 63/100
    assert_painted(out, out.boxes[0], COLOURS[0], margin=2)


def test_random_crop_translates_clips_and_drops_boxes_left_outside():
    boxes = [(60, 40, 90, 70), (140, 100, 200, 180), (0, 0, 40, 20), (150, 0, 200, 30)]
    sample = painted(300, 200, boxes)
    crop = cfg.RandomCrop((100, 100))
    out = run(crop, sample, ("integers", (0, 101), 30), ("integers", (0, 201), 50))  # window y 30.., x 50..
    assert np.array_equal(out.img, sample.img[30:130, 50:150])
    # (60, 40, 90, 70) -> (10, 10, 40, 40); (140, 100, 200, 180) -> (90, 70, 150, 150) clipped to 100;
    # (0, 0, 40, 20) ends at x = -10 and (150, 0, 200, 30) starts at x = 100: both outside, dropped
    np.testing.assert_array_equal(out.boxes, [[10, 10, 40, 40], [90, 70, 100, 100]])
    np.testing.assert_array_equal(out.labels, [0, 1])
    assert_painted(out, out.boxes[0], COLOURS[0])
    # a window with no box: the sample is refused (refetched by the caller) unless negative crops are allowed
    assert run(crop, sample, ("integers", (0, 101), 100), ("integers", (0, 201), 200)) is None
    empty = run(cfg.RandomCrop((100, 100), allow_negative_crop=True), sample, ("integers", (0, 101), 100),
                ("integers", (0, 201), 200))
    assert empty.img.shape == (100, 100, 3) and empty.boxes.shape == (0, 4)
    # an image smaller than the window is kept whole
    small = run(crop, painted(80, 60, [(1, 1, 5, 5)]), ("integers", (0, 1), 0), ("integers", (0, 1), 0))
    assert small.img.shape == (60, 80, 3)


def test_pad_fills_bottom_and_right():
    sample = painted(300, 200, [(10, 10, 50, 50)])
    out = run(cfg.Pad((960, 960), (114, 114, 114)), sample)
    assert out.img.shape == (960, 960, 3) and np.array_equal(out.img[:200, :300], sample.img)
    assert (out.img[200:] == 114).all() and (out.img[:, 300:] == 114).all()
    np.testing.assert_array_equal(out.boxes, sample.boxes)
    assert run(cfg.Pad((100, 100)), sample).img.shape == (200, 300, 3)  # never crops


# ---- Mosaic ------------------------------------------------------------------------------------------------------


def quadrant_samples():
    """Four flat images of different sizes and colours, one box each."""
    return [painted(50, 40, [(5, 5, 15, 10)], background=(10, 10, 10)),
            painted(100, 200, [(20, 0, 60, 60)], background=(20, 20, 20)),
            painted(60, 60, [(0, 0, 30, 30)], background=(30, 30, 30)),
            painted(200, 50, [(100, 10, 200, 50)], background=(40, 40, 40))]


def test_mosaic_places_four_images_around_the_centre():
    primary, *others = quadrant_samples()
    mosaic = cfg.Mosaic(img_scale=(100, 100))
    out = run(mosaic, primary, ("uniform", (0, 1), 0.3), ("integers", (0, 3), 0), ("integers", (0, 3), 1),
              ("integers", (0, 3), 2), ("uniform", (0.5, 1.5), 1.0), ("uniform", (0.5, 1.5), 0.8), source=others)
    img = out.img
    assert img.shape == (200, 200, 3)  # canvas 2 x img_scale, centre (100, 80)
    # top left: 50 x 40 scaled by 2 -> fills (0, 0)-(100, 80)
    assert (img[25:80, 35:100] == 10).all()
    # top right: 100 x 200 scaled by 0.5 -> 50 x 100, its bottom 80 rows at (100, 0)-(150, 80); pad to its right
    assert (img[0:80, 130:150] == 20).all() and (img[0:80, 150:] == 114).all()
    # bottom left: 60 x 60 scaled by 100/60 -> 100 x 100 at (0, 80)-(100, 180); pad below
    assert (img[135:180, 55:100] == 30).all() and (img[180:, :100] == 114).all()
    # bottom right: 200 x 50 scaled by 0.5 -> 100 x 25 at (100, 80)-(200, 105); pad below
    assert (img[81:105, 100:150] == 40).all() and (img[105:, 100:] == 114).all()
    # boxes: x2 and shifted; the top right one (20, 0, 60, 60) -> (10, 0, 30, 30) - (0, 20) + (100, 0), clipped at y 0
    np.testing.assert_allclose(out.boxes, [[10, 10, 30, 20], [110, 0, 130, 10], [0, 80, 50, 130],
                                           [150, 85, 200, 105]], atol=1e-4)
    np.testing.assert_array_equal(out.labels, [0, 0, 0, 0])
    assert out.source_ids == (7, 7, 7, 7) and out.img_id == primary.img_id
    for box, colour in zip(out.boxes[[0, 2, 3]], [COLOURS[0]] * 3):
        assert_painted(out, box, colour)


def test_mosaic_without_border_clipping_drops_boxes_outside_the_canvas():
    primary, *others = quadrant_samples()
    mosaic = cfg.Mosaic(img_scale=(100, 100), bbox_clip_border=False)
    out = run(mosaic, primary, ("uniform", (0, 1), 0.3), ("integers", (0, 3), 0), ("integers", (0, 3), 1),
              ("integers", (0, 3), 2), ("uniform", (0.5, 1.5), 1.0), ("uniform", (0.5, 1.5), 0.8), source=others)
    # the top right box reaches y = -20..10: partly inside, kept unclipped
    np.testing.assert_allclose(out.boxes[1], [110, -20, 130, 10], atol=1e-4)
    out = run(mosaic, primary, ("uniform", (0, 1), 0.3), ("integers", (0, 3), 0), ("integers", (0, 3), 1),
              ("integers", (0, 3), 2), ("uniform", (0.5, 1.5), 1.0), ("uniform", (0.5, 1.5), 0.5), source=others)
    # centre y 50: the top images show their bottom 50 rows only; their boxes (y -20..-10 and -50..-20) are gone
    np.testing.assert_allclose(out.boxes, [[0, 50, 50, 100], [150, 55, 200, 75]], atol=1e-4)


def test_mosaic_probability_gate_draws_first():
    primary, *others = quadrant_samples()
    assert run(cfg.Mosaic(img_scale=(100, 100), prob=0.5), primary, ("uniform", (0, 1), 0.6)) is primary


def test_cached_mosaic_waits_for_five_images_then_mixes_from_its_fifo_cache():
    samples = [painted(40, 40, [(0, 0, 10, 10)], background=(10 * i, 0, 0)) for i in range(7)]
    mosaic = Pipeline([cfg.Mosaic(img_scale=(40, 40), use_cached=True, max_cached_images=5,
                                        random_pop=False)]).steps[0]
    for sample in samples[:4]:  # up to 4 cached: passed through
        draws = Draws(("uniform", (0, 1), 0.0))
        assert mosaic(sample, Context(draws, ListSource([]))) is sample and draws.done()
    centre = [("uniform", (0.5, 1.5), 1.0), ("uniform", (0.5, 1.5), 1.0)]
    draws = Draws(("uniform", (0, 1), 0.0), ("integers", (0, 5), 4), ("integers", (0, 5), 0),
                  ("integers", (0, 5), 1), *centre)
    out = mosaic(samples[4], Context(draws, ListSource([])))
    # the partners are cache entries 4 (itself), 0 and 1: quadrant colours 40, 40, 0, 10
    assert [int(out.img[y, x, 0]) for y, x in ((20, 20), (20, 60), (60, 20), (60, 60))] == [40, 40, 0, 10]
    draws = Draws(("uniform", (0, 1), 0.0), ("integers", (0, 5), 0), ("integers", (0, 5), 0),
                  ("integers", (0, 5), 0), *centre)
    out = mosaic(samples[5], Context(draws, ListSource([])))
    # 6 > 5 cached: the oldest (sample 0) left, so entry 0 is now sample 1
    assert [s.img[20, 20, 0] for s in mosaic.cache] == [10, 20, 30, 40, 50] and int(out.img[60, 60, 0]) == 10
    random_pop = Pipeline([cfg.Mosaic(img_scale=(40, 40), use_cached=True, max_cached_images=5)]).steps[0]
    random_pop.cache.extend(samples[:5])
    draws = Draws(("uniform", (0, 1), 0.0), ("integers", (0, 5), 2), ("integers", (0, 5), 0),
                  ("integers", (0, 5), 0), ("integers", (0, 5), 0), *centre)
    random_pop(samples[5], Context(draws, ListSource([])))
    # random_pop: randint(0, len - 1) over the 6 entries chose entry 2 (the newest is never popped)
    assert [s.img[20, 20, 0] for s in random_pop.cache] == [0, 10, 30, 40, 50]


# ---- mix-ups -----------------------------------------------------------------------------------------------------


def test_yolov5_mixup_blends_with_a_beta_ratio_and_keeps_both_boxes():
    a = painted(64, 32, [(0, 0, 10, 10)], background=(100, 100, 100))
    b = painted(64, 32, [(20, 20, 30, 30)], background=(200, 200, 200))
    mixup = cfg.YOLOv5MixUp(prob=0.1)
    out = run(mixup, a, ("uniform", (0, 1), 0.05), ("integers", (0, 2), 1), ("beta", (32.0, 32.0), 0.25),
              source=[a, b])
    assert (out.img[16, 40] == 175).all()  # int(100 * 0.25 + 200 * 0.75)
    np.testing.assert_array_equal(out.boxes, [[0, 0, 10, 10], [20, 20, 30, 30]])
    assert run(mixup, a, ("uniform", (0, 1), 0.5)) is a  # 0.5 > prob 0.1: no mix-up, no other draw
    at_prob = run(mixup, a, ("uniform", (0, 1), 0.1), ("integers", (0, 2), 1), ("beta", (32.0, 32.0), 0.5),
                  source=[a, b])
    assert len(at_prob.boxes) == 2  # a draw equal to prob mixes (upstream skips when draw > prob)
    with pytest.raises(DatasetError, match="one size"):
        run(mixup, a, ("uniform", (0, 1), 0.0), ("integers", (0, 1), 0), source=[painted(10, 10)])


def test_yolov5_mixup_builds_its_other_image_with_its_pre_transform():
    a = painted(64, 32, [(0, 0, 10, 10)], background=(100, 100, 100))
    b = painted(64, 32, [(20, 10, 30, 20)], background=(200, 200, 200))
    mixup = cfg.YOLOv5MixUp(pre_transform=(cfg.RandomFlip(1.0),))
    out = run(mixup, a, ("uniform", (0, 1), 0.0), ("integers", (0, 2), 1), ("random", (), 0.0),
              ("beta", (32.0, 32.0), 0.5), source=[a, b])
    np.testing.assert_array_equal(out.boxes[1], [34, 10, 44, 20])  # b flipped first: 64 - x


def test_a_mix_retries_other_images_its_pre_transform_refused():
    a = painted(100, 100, [(0, 0, 10, 10)], background=(100, 100, 100))
    lost = painted(300, 200, [(0, 0, 20, 20)])  # cropped at (200, 100): its box is left out
    kept = painted(300, 200, [(250, 150, 300, 200)])
    mixup = cfg.YOLOv5MixUp(pre_transform=(cfg.RandomCrop((100, 100)),))
    crop = [("integers", (0, 101), 100), ("integers", (0, 201), 200)]
    out = run(mixup, a, ("uniform", (0, 1), 0.0), ("integers", (0, 2), 0), *crop, ("integers", (0, 2), 1), *crop,
              ("beta", (32.0, 32.0), 0.5), source=[lost, kept])
    np.testing.assert_array_equal(out.boxes, [[0, 0, 10, 10], [50, 50, 100, 100]])
    with pytest.raises(DatasetError, match="returned no image 15 times in a row"):  # upstream's max_refetch
        run(mixup, a, ("uniform", (0, 1), 0.0), *[("integers", (0, 1), 0), *crop] * 15, source=[lost])


def test_yolox_mixup_pastes_flips_and_averages():
    primary = painted(100, 100, [(40, 40, 60, 60)], background=(50, 50, 50))
    other = painted(50, 100, [(10, 10, 30, 30)], background=(250, 250, 250))
    mixup = cfg.YOLOXMixUp(img_scale=(100, 100), ratio_range=(1.0, 1.0), pad_val=(114, 114, 114))
    out = run(mixup, primary, ("uniform", (0, 1), 0.0), ("integers", (0, 1), 0), ("uniform", (1.0, 1.0), 1.0),
              ("uniform", (0, 1), 0.9), source=[other])
    # the other image fills the left half of a 100 x 100 canvas, flipped (0.9 > 0.5) to the right half
    assert (out.img[70:, :50] == 82).all() and (out.img[70:, 50:] == 150).all()  # int(25 + 57), int(25 + 125)
    np.testing.assert_array_equal(out.boxes, [[40, 40, 60, 60], [70, 10, 90, 30]])
    assert out.source_ids == (7, 7)


def test_yolox_mixup_jitter_larger_than_the_image_crops_at_a_drawn_offset():
    primary = painted(100, 100, [(40, 40, 60, 60)], background=(50, 50, 50))
    other = painted(100, 100, [(10, 20, 30, 40), (80, 80, 100, 100)], background=(250, 250, 250))
    mixup = cfg.YOLOXMixUp(img_scale=(100, 100), ratio_range=(2.0, 2.0))
    out = run(mixup, primary, ("uniform", (0, 1), 0.0), ("integers", (0, 1), 0), ("uniform", (2.0, 2.0), 2.0),
              ("uniform", (0, 1), 0.1), ("integers", (0, 100), 30), ("integers", (0, 100), 10), source=[other])
    # doubled to 200 x 200, window y 30.., x 10..: (20, 40, 60, 80) -> (10, 10, 50, 50); (160, 160, 200, 200) ->
    # (150, 130, 190, 170) clipped to the 100 x 100 image: (100, 100, 100, 100), kept (clipping, no filtering)
    np.testing.assert_array_equal(out.boxes[1:], [[10, 10, 50, 50], [100, 100, 100, 100]])
    assert (out.img[20:40, 20:40, 0] == int(0.5 * 50 + 0.5 * COLOURS[0][0])).all()


def test_yolox_mixup_skips_another_image_without_boxes():
    primary = painted(100, 100, [(40, 40, 60, 60)])
    assert run(cfg.YOLOXMixUp(img_scale=(100, 100)), primary, ("uniform", (0, 1), 0.0), ("integers", (0, 1), 0),
               source=[painted(50, 50)]) is primary


# ---- pipelines ---------------------------------------------------------------------------------------------------


def test_a_refused_sample_is_replaced_by_another_drawn_image():
    samples = [painted(300, 200, [(0, 0, 20, 20)]), painted(300, 200, [(250, 150, 300, 200)])]
    pipeline = Pipeline([cfg.RandomCrop((100, 100))])
    draws = Draws(("integers", (0, 101), 100), ("integers", (0, 201), 200),  # image 0: its box is left out
                  ("integers", (0, 2), 1),  # another image, as mmengine's _rand_another
                  ("integers", (0, 101), 100), ("integers", (0, 201), 200))
    out = make_sample(pipeline, ListSource(samples), 0, draws)
    assert draws.done()
    np.testing.assert_array_equal(out.boxes, [[50, 50, 100, 100]])


def test_pipelines_report_their_caches():
    rtmdet = cfg.TRAIN_PIPELINES["rtmdet_tiny"]
    assert Pipeline(rtmdet.stage1).stateful and not Pipeline(rtmdet.stage2).stateful
    assert not Pipeline(cfg.TRAIN_PIPELINES["yolov6_l_d12"].stage1).stateful
    pipeline = Pipeline(rtmdet.stage1)
    pipeline.steps[0].cache.append(painted(10, 10))
    pipeline.reset()
    assert not pipeline.steps[0].cache
    assert "Mosaic, RandomResize" in repr(pipeline)
