"""Detections: indexing, filtering, dict/COCO export, drawing, repr."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from razorzoo.detection.results import COCO_CATEGORY_IDS, Detections
from razorzoo.arch.recipes import COCO_CLASSES


def _detections() -> Detections:
    boxes = torch.tensor([[10.0, 20.0, 50.0, 60.0], [5.0, 5.0, 15.0, 25.0], [30.0, 10.0, 90.0, 40.0]])
    return Detections(boxes, torch.tensor([0.9, 0.6, 0.3]), torch.tensor([0, 11, 79]), COCO_CLASSES)


def test_length_names_and_indexing():
    d = _detections()
    assert len(d) == 3 and d.names == ["person", "stop sign", "toothbrush"]
    assert isinstance(d[1], Detections) and d[1].names == ["stop sign"] and d[1].boxes.shape == (1, 4)
    assert d[-1].names == ["toothbrush"]
    assert d[1:].names == ["stop sign", "toothbrush"]
    assert d[torch.tensor([False, True, True])].scores.tolist() == pytest.approx([0.6, 0.3])
    assert d[[2, 0]].labels.tolist() == [79, 0]
    assert d[np.array([True, False, True])].labels.tolist() == [0, 79]  # a mask, not the indices 1, 0, 1
    with pytest.raises(IndexError):
        d[3]


def test_filter_by_class_name_or_index_and_score():
    d = _detections()
    assert d.filter(classes=["person", 79]).names == ["person", "toothbrush"]
    assert d.filter(min_score=0.5).names == ["person", "stop sign"]
    assert d.filter(classes=["toothbrush"], min_score=0.5).names == []
    with pytest.raises(ValueError, match="persn"):
        d.filter(classes=["persn"])
    with pytest.raises(ValueError, match="out of range"):
        d.filter(classes=[80])


def test_to_dict_is_json_ready():
    payload = json.loads(json.dumps(_detections().to_dict()))
    assert payload["boxes"][0] == [10.0, 20.0, 50.0, 60.0]
    assert payload["labels"] == [0, 11, 79] and payload["names"][1] == "stop sign"


def test_to_coco_uses_real_category_ids_and_xywh():
    entries = _detections().to_coco(image_id=42)
    assert [e["category_id"] for e in entries] == [1, 13, 90]
    assert entries[0]["bbox"] == [10.0, 20.0, 40.0, 40.0] and entries[2]["bbox"] == [30.0, 10.0, 60.0, 30.0]
    assert entries[0]["image_id"] == 42 and entries[0]["score"] == pytest.approx(0.9)
    assert len(COCO_CATEGORY_IDS) == 80 and len(set(COCO_CATEGORY_IDS)) == 80
    custom = _detections().to_coco(image_id=1, category_ids=list(range(100, 180)))
    assert [e["category_id"] for e in custom] == [100, 111, 179]


def test_to_coco_needs_a_mapping_for_other_class_sets():
    d = Detections(torch.zeros(1, 4), torch.ones(1), torch.zeros(1, dtype=torch.long), ("cat", "dog"))
    with pytest.raises(ValueError, match="category_ids"):
        d.to_coco(image_id=1)
    assert d.to_coco(image_id=1, category_ids=[7, 8])[0]["category_id"] == 7


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="boxes"):
        Detections(torch.zeros(2, 4), torch.zeros(3), torch.zeros(3, dtype=torch.long), COCO_CLASSES)


def test_draw_boxes_in_class_colours_on_a_copy():
    background = np.full((100, 120, 3), 40, dtype=np.uint8)  # BGR array, as for predict
    d = _detections()
    picture = d.draw(background, line_width=2)
    assert isinstance(picture, Image.Image) and picture.size == (120, 100) and picture.mode == "RGB"
    pixels = np.asarray(picture)
    left_edge_person = tuple(pixels[55, 10])  # (x=10, y=55) on the person box, below its label
    right_edge_toothbrush = tuple(pixels[35, 90])
    assert left_edge_person != (40, 40, 40) and right_edge_toothbrush != (40, 40, 40)
    assert left_edge_person != right_edge_toothbrush  # one colour per class
    assert tuple(pixels[95, 110]) == (40, 40, 40)  # far from every box
    assert (background == 40).all()  # the input is untouched
    assert np.array_equal(np.asarray(d[:0].draw(background)), background[..., ::-1])


def test_draw_reads_files(tmp_path):
    path = tmp_path / "blue.png"
    Image.new("RGB", (30, 20), (0, 0, 255)).save(path)
    picture = Detections(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), COCO_CLASSES).draw(path)
    assert picture.getpixel((5, 5)) == (0, 0, 255)


def test_repr_lists_the_best_detections():
    text = repr(_detections())
    assert text.splitlines()[0] == "Detections(3 boxes)"
    assert "person" in text and "0.900" in text and "[10.0, 20.0, 50.0, 60.0]" in text
    many = Detections(torch.zeros(9, 4), torch.zeros(9), torch.zeros(9, dtype=torch.long), COCO_CLASSES)
    assert "4 more" in repr(many)
