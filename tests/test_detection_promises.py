"""Detection and model-building promises pinned by cases that separate right from almost right: mmcv's per-class
NMS path on tied scores, mmcv's ``int(x + 0.5)`` rounding, mmcv-like decoding of grey and 16-bit files, building
without random init, and ``device=``."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

import razorzoo
from razorzoo.detection.nms import _NMS_SPLIT_THR, batched_nms, nms
from razorzoo.detection.transforms import load_image, resize_pad


def _reference_per_class_nms(boxes, scores, labels, thr: float) -> set[int]:
    """mmcv.ops.batched_nms from 10000 boxes on: one ``nms`` per label over that label's boxes, each visited by
    ``scores.sort(descending=True)`` of the label's own scores (so ties are ordered within the label)."""
    kept = set()
    for label in labels.unique().tolist():
        members = (labels == label).nonzero().view(-1)
        kept.update(members[nms(boxes[members], scores[members], thr)].tolist())
    return kept


def test_per_class_nms_path_from_10000_candidates_on_tied_scores():
    """With four distinct score values, which of two overlapping tied boxes survives depends on the visiting order;
    the per-class path and the single offset-box NMS order ties differently, so this case tells them apart."""
    g = torch.Generator().manual_seed(5)
    xy = torch.rand(10000, 2, generator=g) * 400
    boxes = torch.cat([xy, xy + torch.rand(10000, 2, generator=g) * 60 + 1], 1)
    scores = (torch.rand(10000, generator=g) * 4).floor() / 4 + 0.1
    labels = torch.randint(0, 50, (10000,), generator=g)
    assert len(boxes) >= _NMS_SPLIT_THR  # mmcv's per-class path
    keep = batched_nms(boxes, scores, labels, 0.5)
    assert set(keep.tolist()) == _reference_per_class_nms(boxes, scores, labels, 0.5)
    offset = boxes + labels[:, None] * (boxes.max() + 1)
    assert set(nms(offset, scores, 0.5).tolist()) != set(keep.tolist())  # the single-NMS path differs here
    assert bool((scores[keep][1:] <= scores[keep][:-1]).all())
    (best,) = batched_nms(boxes, scores, labels, 0.5, max_num=1).tolist()  # one of the tied best
    assert scores[best] == scores[keep[0]] and best in keep.tolist()


def test_resize_pad_rounds_half_up_like_mmcv():
    """mmcv.imrescale sizes are ``int(x + 0.5)``: 5 x 1280 at 640 is 2.5 rows -> 3 (Python's round gives 2)."""
    source = np.full((5, 1280, 3), 200, dtype=np.uint8)
    image, meta = resize_pad(source, 640, 114)
    assert meta.scale_factor == (0.5, 3 / 5)
    assert (image[:3] == 200).all() and (image[3:] == 114).all()


def test_grey_and_16_bit_files_decode_to_8_bit_bgr(tmp_path):
    """mmcv's ``imread(..., 'color')`` (cv2 IMREAD_COLOR): grey is replicated, 16-bit keeps the high byte."""
    grey = np.array([[0, 77], [128, 255]], dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "grey.png"), grey)
    assert np.array_equal(load_image(tmp_path / "grey.png"), np.repeat(grey[..., None], 3, axis=2))
    deep = np.array([[[0x1234, 0xABCD, 0x00FF]]], dtype=np.uint16)  # B, G, R
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    decoded = load_image(tmp_path / "deep.png")
    assert decoded.dtype == np.uint8 and decoded.tolist() == [[[0x12, 0xAB, 0x00]]]
    grey16 = np.array([[0x0100, 0xFF00]], dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "grey16.png"), grey16)
    assert load_image(tmp_path / "grey16.png").tolist() == [[[1, 1, 1], [255, 255, 255]]]


@pytest.mark.parametrize("build, name", [(razorzoo.build_detector, "rtmdet_tiny-ofa_lat31"),
                                         (razorzoo.build_classifier, "spos_0.33M")])
def test_building_does_no_random_init(build, name):
    """Weights are about to be overwritten: building draws nothing from torch's RNG and leaves zeros, and puts
    torch's initializers back afterwards."""
    torch.manual_seed(0)
    before = torch.get_rng_state()
    model = build(name)
    assert torch.equal(torch.get_rng_state(), before)
    convs = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(not w.any() for w in convs)
    assert torch.nn.init.kaiming_uniform_(torch.empty(4, 4)).any()


def test_device_argument_places_the_model(tmp_path):
    from checkpoints import write_checkpoint

    model = "rtmdet_tiny-ofa_lat31"
    path = write_checkpoint(model, "mmdet-publish", tmp_path / "rtmdet.pth")
    on_meta = razorzoo.load_detector(path, subnet=model, device="meta")
    assert {p.device.type for p in on_meta.parameters()} == {"meta"}
    assert {p.device.type for p in razorzoo.load_detector(path, subnet=model).parameters()} == {"cpu"}


def test_nms_goes_on_after_a_block_that_is_wholly_suppressed():
    """300 copies of one box, then a disjoint box with the lowest score: the second block of sorted boxes is all
    suppressed by the first, and the disjoint box in the third block is still kept."""
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 300 + [[50.0, 50.0, 60.0, 60.0]])
    scores = torch.linspace(1.0, 0.5, 301)
    assert nms(boxes, scores, 0.5).tolist() == [0, 300]


def test_empty_inputs_give_empty_index_tensors():
    for keep in (nms(torch.zeros(0, 4), torch.zeros(0), 0.5),
                 batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5)):
        assert keep.tolist() == [] and keep.dtype == torch.long


def test_batched_nms_never_suppresses_across_classes():
    """Even at IoU threshold 0 (any overlap suppresses): mmcv's offset of ``max + 1`` per label keeps the classes
    apart for boxes in image coordinates."""
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0], [2.0, 2.0, 9.0, 9.0]])
    assert batched_nms(boxes, torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 1, 0]), 0.0).tolist() == [0, 1]
