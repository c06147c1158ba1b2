"""Decoding and NMS: MMYOLO ``predict_by_feat`` goldens, hand-derived priors/coders, a reference greedy NMS."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from helpers import DATA, DETECTORS, MAX_PER_IMG, RECIPE_OF, assert_same_detections
from razorzoo.arch.recipes import RECIPES, DistanceCoder, TestConfig
from razorzoo.detection.coders import DistancePointCoder, anchor_priors, build_coder, decode_distance, decode_yolov5, \
    point_priors
from razorzoo.detection.nms import batched_nms, nms
from razorzoo.detection.postprocess import filter_scores_and_topk, postprocess, with_overrides
from razorzoo.detection.transforms import ImageMeta
from razorzoo.errors import RazorzooError

CASES = [(model, case) for model in DETECTORS for case in ("case0", "case1")]


def _golden_case(model: str, case: str):
    """Dense head outputs rebuilt from the sparse golden (goldens.json -> postproc -> reconstruct), the meta, and
    the upstream detections."""
    info = json.loads((DATA / model / "goldens.json").read_text())["postproc"][case]
    tensors = load_file(DATA / model / "goldens.safetensors")
    dense = {}
    for name, spec in info["tensors"].items():
        t = torch.full(spec["shape"], spec["background"], dtype=torch.float32)
        t.view(-1)[tensors[f"postproc.{case}.{name}.index"].long()] = tensors[f"postproc.{case}.{name}.value"]
        dense[name] = t
    kinds = [k for k in ("cls_scores", "bbox_preds", "objectnesses") if f"{k}.0" in dense]
    raw = tuple([dense[f"{kind}.{level}"] for level in range(3)] for kind in kinds)
    fields = {key: tuple(value["value"]) for key, value in info["meta"].items()}
    meta = ImageMeta(ori_shape=fields["ori_shape"], img_shape=fields["img_shape"][:2],
                     scale_factor=fields["scale_factor"], batch_input_shape=fields["batch_input_shape"],
                     pad_param=fields.get("pad_param"))
    expected = {k: tensors[f"postproc.{case}.pred.{k}"] for k in ("bboxes", "scores", "labels")}
    return raw, meta, expected


def _triplet(expected: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return expected["bboxes"], expected["scores"], expected["labels"]


def _run(model: str, raw, metas, **overrides):
    recipe = RECIPES[RECIPE_OF[model]]
    test_cfg = with_overrides(recipe.test_cfg, **overrides)
    return postprocess(raw, metas, coder=build_coder(recipe.coder), test_cfg=test_cfg, strides=recipe.strides,
                       class_names=recipe.class_names)


@pytest.mark.parametrize("model,case", CASES)
def test_predict_by_feat_goldens(model, case):
    raw, meta, expected = _golden_case(model, case)
    (detections,) = _run(model, raw, [meta])
    assert len(expected["scores"]) > 0
    assert_same_detections(detections, _triplet(expected), MAX_PER_IMG[model])
    assert detections.boxes.dtype == torch.float32 and detections.labels.dtype == torch.int64


def test_heavy_case_has_more_candidates_than_nms_pre():
    """case1 exercises the nms_pre cut and mmcv's per-class NMS path (>= 10000 candidates)."""
    info = json.loads((DATA / "yolov5s-spos_0.33M" / "goldens.json").read_text())["postproc"]["case1"]
    assert info["margins"]["n_candidates_above_thr"] > info["test_cfg"]["nms_pre"] >= 10000


def test_images_of_a_batch_are_independent():
    model = "yolov6s-attentive_a6"
    raw, meta, expected = _golden_case(model, "case0")
    flipped_meta = replace(meta, ori_shape=(640, 480), pad_param=(0.0, 0.0, 80.0, 80.0))
    batch = tuple([torch.cat([t, t.flip(-1)]) for t in level] for level in raw)
    first, second = _run(model, batch, [meta, flipped_meta])
    (alone,) = _run(model, tuple([t.flip(-1) for t in level] for level in raw), [flipped_meta])
    assert_same_detections(first, _triplet(expected))
    assert len(second) > 0 and torch.equal(second.boxes, alone.boxes) and torch.equal(second.labels, alone.labels)
    assert not torch.equal(second.boxes[:5], first.boxes[:5])


def test_user_overrides_of_score_iou_and_max_det():
    model = "rtmdet_tiny-ofa_lat31"
    raw, meta, expected = _golden_case(model, "case0")
    (strict,) = _run(model, raw, [meta], score_thr=0.9)
    assert 0 < len(strict) < len(expected["scores"]) and bool((strict.scores > 0.9).all())
    (few,) = _run(model, raw, [meta], max_det=7)
    assert_same_detections(few, tuple(t[:7] for t in _triplet(expected)), 7)
    (loose,) = _run(model, raw, [meta], iou_thr=0.95)
    (tight,) = _run(model, raw, [meta], iou_thr=0.1)
    assert len(tight) < len(expected["scores"]) < len(loose)
    with pytest.raises(RazorzooError, match="max_det"):
        _run(model, raw, [meta], max_det=0)


def test_yolov5_needs_objectness():
    raw, meta, _ = _golden_case("yolov5s-spos_0.33M", "case0")
    with pytest.raises(RazorzooError, match=r"^the yolov5 box coder needs objectness outputs: pass \(cls_scores, "):
        _run("yolov5s-spos_0.33M", raw[:2], [meta])


def test_anchor_priors_order_is_level_y_x_anchor():
    anchors = [[(10, 13), (16, 30)], [(40, 50)]]
    priors = anchor_priors([(2, 3), (1, 1)], [8, 16], anchors)
    assert priors.shape == (2 * 3 * 2 + 1, 4)
    # level 0, y=1, x=2, anchor 1 (16 x 30) centred at (2*8 + 4, 1*8 + 4) = (20, 12)
    assert priors[(1 * 3 + 2) * 2 + 1].tolist() == [12.0, -3.0, 28.0, 27.0]
    # level 1, the only cell: 40 x 50 centred at (8, 8)
    assert priors[-1].tolist() == [-12.0, -17.0, 28.0, 33.0]


@pytest.mark.parametrize("offset,expected", [(0.5, [40.0, 8.0]), (0.0, [32.0, 0.0])])
def test_point_priors_offsets(offset, expected):
    points = point_priors([(2, 5)], [16], offset)
    assert points.shape == (10, 2)
    assert points[2].tolist() == expected  # y=0, x=2


def test_yolov5_coder_zero_logits_return_the_anchor_and_saturate_at_4x():
    priors = torch.tensor([[[0.0, 0.0, 10.0, 20.0]]])
    stride = torch.tensor([8.0])
    assert decode_yolov5(priors, torch.zeros(1, 1, 4), stride).tolist() == [[[0.0, 0.0, 10.0, 20.0]]]
    # sigmoid -> 1: centre moves by +1 stride, size (2*1)^2 = 4x; centre (5, 10) -> (13, 18), size 40 x 80
    big = decode_yolov5(priors, torch.full((1, 1, 4), 50.0), stride)
    assert big.tolist() == [[[-7.0, -22.0, 33.0, 58.0]]]


def test_distance_coder_scales_by_stride():
    points = torch.tensor([[[100.0, 50.0]]])
    boxes = decode_distance(points, torch.tensor([[[1.0, 2.0, 3.0, 4.0]]]), torch.tensor([8.0]))
    assert boxes.tolist() == [[[92.0, 34.0, 124.0, 82.0]]]


def _reference_nms(boxes: torch.Tensor, scores: torch.Tensor, thr: float) -> list[int]:
    """Straight transcription of mmcv's nms.cpp loop (one box pair at a time)."""
    order = scores.sort(0, descending=True)[1].tolist()
    b = boxes.tolist()
    area = [(x2 - x1) * (y2 - y1) for x1, y1, x2, y2 in b]
    alive = [True] * len(order)
    for a in range(len(order)):
        if not alive[a]:
            continue
        i = order[a]
        for c in range(a + 1, len(order)):
            j = order[c]
            if not alive[c]:
                continue
            w = max(0.0, min(b[i][2], b[j][2]) - max(b[i][0], b[j][0]))
            h = max(0.0, min(b[i][3], b[j][3]) - max(b[i][1], b[j][1]))
            inter = w * h
            if inter / (area[i] + area[j] - inter) > thr:
                alive[c] = False
    return [order[a] for a in range(len(order)) if alive[a]]


def _random_boxes(n: int, seed: int, extent: float = 300.0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * extent
    wh = torch.rand(n, 2, generator=g) * 60 + 1
    return torch.cat([xy, xy + wh], 1), torch.rand(n, generator=g)


@pytest.mark.parametrize("seed,n,thr", [(1, 50, 0.5), (2, 400, 0.3), (3, 700, 0.65), (4, 300, 0.0)])
def test_nms_equals_the_reference_loop(seed, n, thr):
    boxes, scores = _random_boxes(n, seed)
    assert nms(boxes, scores, thr).tolist() == _reference_nms(boxes, scores, thr)


def test_nms_suppresses_only_above_the_threshold():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0]])  # IoU exactly 0.5
    scores = torch.tensor([0.9, 0.8])
    assert nms(boxes, scores, 0.5).tolist() == [0, 1]
    assert nms(boxes, scores, 0.49).tolist() == [0]
    assert nms(boxes, torch.tensor([0.1, 0.8]), 0.49).tolist() == [1]
    assert nms(boxes, scores, 0.5, max_num=1).tolist() == [0]


def test_batched_nms_is_class_aware():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 10.0, 10.0]])
    scores = torch.tensor([0.5, 0.9, 0.7])
    labels = torch.tensor([3, 7, 3])
    assert batched_nms(boxes, scores, labels, 0.5).tolist() == [1, 2]
    assert len(batched_nms(boxes[:0], scores[:0], labels[:0], 0.5)) == 0


def test_batched_nms_per_class_path_equals_per_class_reference():
    """From 10000 candidates mmcv runs one NMS per class and re-sorts by score: same boxes as the reference."""
    boxes, scores = _random_boxes(10000, seed=5, extent=400.0)
    labels = torch.randint(0, 50, (10000,), generator=torch.Generator().manual_seed(6))
    keep = batched_nms(boxes, scores, labels, 0.5)
    expected = []
    for label in range(50):
        members = (labels == label).nonzero().view(-1)
        expected += members[_reference_nms(boxes[members], scores[members], 0.5)].tolist()
    assert sorted(keep.tolist()) == sorted(expected)
    assert bool((scores[keep][1:] <= scores[keep][:-1]).all())
    top = batched_nms(boxes, scores, labels, 0.5, max_num=25)
    assert top.tolist() == keep[:25].tolist()


def test_min_bbox_size_drops_empty_boxes_after_rescale():
    """RTMDet (min_bbox_size=0) drops boxes with zero width or zero height; YOLO recipes (None) keep them."""
    cls = [torch.full((1, 2, 1, 3), -9.0)]
    cls[0][0, 1, 0, :] = 5.0  # class 1 at every cell
    dist = torch.ones(1, 4, 1, 3)
    dist[0, 0, 0, 1] = dist[0, 2, 0, 1] = 0.0  # second cell: zero width
    dist[0, 1, 0, 2] = dist[0, 3, 0, 2] = 0.0  # third cell: zero height
    meta = ImageMeta(ori_shape=(50, 50), img_shape=(8, 24), scale_factor=(1.0, 1.0), batch_input_shape=(8, 24))
    cfg = TestConfig(multi_label=True, nms_pre=10, score_thr=0.1, iou_threshold=0.5, max_per_img=10, min_bbox_size=0)
    common = dict(coder=DistancePointCoder(DistanceCoder(0.0)), strides=[8], class_names=("a", "b"))
    (dropped,) = postprocess((cls, [dist]), [meta], test_cfg=cfg, **common)
    (kept,) = postprocess((cls, [dist]), [meta], test_cfg=replace(cfg, min_bbox_size=None), **common)
    assert dropped.boxes.tolist() == [[0.0, 0.0, 8.0, 8.0]]
    assert sorted(kept.boxes.tolist()) == [[0.0, 0.0, 8.0, 8.0], [8.0, 0.0, 8.0, 8.0], [8.0, 0.0, 24.0, 0.0]]
    assert kept.names == ["b", "b", "b"]


def test_boxes_are_clamped_to_the_original_image():
    cls = [torch.full((1, 1, 1, 1), 5.0)]
    dist = torch.full((1, 4, 1, 1), 100.0)  # 800 px in every direction
    meta = ImageMeta(ori_shape=(30, 40), img_shape=(16, 8), scale_factor=(2.0, 2.0), batch_input_shape=(16, 8),
                     pad_param=(4.0, 4.0, 0.0, 0.0))
    cfg = TestConfig(multi_label=True, nms_pre=10, score_thr=0.1, iou_threshold=0.5, max_per_img=10,
                     min_bbox_size=None)
    (d,) = postprocess((cls, [dist]), [meta], coder=DistancePointCoder(DistanceCoder(0.5)), test_cfg=cfg,
                       strides=[8], class_names=("only",))
    assert d.boxes.tolist() == [[0.0, 0.0, 40.0, 30.0]]


def test_filter_scores_and_topk_is_strict_at_the_threshold_and_keeps_the_best_topk():
    scores = torch.tensor([[0.9, 0.25], [0.25, 0.7], [0.3, 0.1]])
    kept, labels, boxes = filter_scores_and_topk(scores, 0.25, 10)  # 0.25 itself is not above 0.25 (mmdet: '>')
    assert kept.tolist() == pytest.approx([0.9, 0.7, 0.3]) and labels.tolist() == [0, 1, 0]
    assert boxes.tolist() == [0, 1, 2]
    kept, labels, boxes = filter_scores_and_topk(scores, 0.25, 2)
    assert kept.tolist() == pytest.approx([0.9, 0.7]) and labels.tolist() == [0, 1] and boxes.tolist() == [0, 1]


@pytest.mark.parametrize("multi_label,expected", [(True, [0, 1]), (False, [1])])
def test_multi_label_keeps_every_class_above_the_threshold(multi_label, expected):
    """One box, two confident classes: multi-label (all shipped recipes) reports both, single-label the best."""
    cls = [torch.tensor([2.0, 3.0]).view(1, 2, 1, 1)]
    dist = torch.ones(1, 4, 1, 1)
    meta = ImageMeta(ori_shape=(16, 16), img_shape=(16, 16), scale_factor=(1.0, 1.0), batch_input_shape=(16, 16))
    cfg = TestConfig(multi_label=multi_label, nms_pre=10, score_thr=0.1, iou_threshold=0.5, max_per_img=10,
                     min_bbox_size=None)
    (d,) = postprocess((cls, [dist]), [meta], coder=DistancePointCoder(DistanceCoder(0.5)), test_cfg=cfg,
                       strides=[8], class_names=("a", "b"))
    assert sorted(d.labels.tolist()) == expected
    assert d.boxes.tolist() == [[0.0, 0.0, 12.0, 12.0]] * len(expected)


def test_overrides_accept_their_boundaries():
    base = RECIPES["rtmdet_tiny"].test_cfg
    assert with_overrides(base) == base
    cfg = with_overrides(base, score_thr=0, iou_thr=1, max_det=1)
    assert (cfg.score_thr, cfg.iou_threshold, cfg.max_per_img) == (0, 1, 1)
    cfg = with_overrides(base, score_thr=1, iou_thr=0)
    assert (cfg.score_thr, cfg.iou_threshold, cfg.max_per_img) == (1, 0, base.max_per_img)


def _full_sort_topk(scores: torch.Tensor, score_thr: float, topk: int):
    """mmdet ``filter_scores_and_topk`` as upstream writes it: sort every valid score (what is replayed)."""
    valid_mask = scores > score_thr
    values, order = scores[valid_mask].sort(descending=True)
    keep_idxs, labels = torch.nonzero(valid_mask)[order[:topk]].unbind(dim=1)
    return values[:topk], labels, keep_idxs


@pytest.mark.parametrize("n, levels, k", [(17, 3, 5), (100, 2, 40), (1000, 7, 333), (5000, 50, 1000),
                                          (40000, 3, 30000), (200000, 1000, 30000), (200000, 200000, 1000)])
def test_sort_prefix_equals_torchs_sort_ties_included(n, levels, k):
    """The first k places of torch's (unstable) CPU sort, equal values in its order, on tie-heavy data."""
    from razorzoo.detection.sort_prefix import sort_prefix

    values = (torch.randint(0, levels, (n,), generator=torch.Generator().manual_seed(n)) / levels).numpy()
    expected = torch.from_numpy(values).sort(descending=True).indices[:k].numpy()
    assert (sort_prefix(values.copy(), k) == expected).all()
    payload = torch.arange(n, dtype=torch.int64).numpy() * 3 + 1
    assert (sort_prefix(values.copy(), k, payload.copy()) == payload[expected]).all()
    assert len(sort_prefix(values.copy(), n + 5)) == n


def test_sort_prefix_with_nan_is_torchs_sort():
    from razorzoo.detection.sort_prefix import sort_prefix

    values = torch.rand(300, generator=torch.Generator().manual_seed(0))
    values[[3, 70, 71]] = float("nan")
    expected = values.sort(descending=True).indices[:50].numpy()
    assert (sort_prefix(values.numpy().copy(), 50) == expected).all()


@pytest.mark.parametrize("score_thr", [0.001, 0.3])
def test_the_topk_of_a_dense_model_output_is_upstreams_full_sort_bit_for_bit(score_thr):
    """YOLOv5 with the fixture weights on a synthetic image: ~2 million (box, class) scores, with runs of exactly
    equal ones (the letterbox padding): the same kept pairs in the same order as the full sort."""
    from helpers import fixture_model
    from razorzoo.deploy.parity import synthetic_images
    from razorzoo.detection.postprocess import decode_outputs

    net = fixture_model(DETECTORS[0])
    with torch.inference_mode():
        _, scores, objectness = decode_outputs(net(net.preprocess([synthetic_images()[0]])[0]), net.coder,
                                               net.recipe.strides)
    scores = scores[0] * objectness[0, :, None]
    expected = _full_sort_topk(scores, score_thr, 30000)
    assert len(expected[0].unique()) < len(expected[0]) - 1000  # over a thousand tied places among those kept
    for found, wanted in zip(filter_scores_and_topk(scores, score_thr, 30000), expected, strict=True):
        assert torch.equal(found, wanted)
