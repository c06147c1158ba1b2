"""Record MMYOLO's own training pipelines on the small dataset in this folder (see README.md).

Run with upstream importable (mmengine 0.10.7, mmcv 2.2.0, mmdet 3.3.0, mmyolo 0.6.0) and the shared venv's numpy
and OpenCV, from the repository root:

    python tests/data/train_pipeline/record.py /work/shared/fixtures

It (re)writes dataset/ (images + instances.json, made here from fixed draws), the recipes' train settings read from
the fixture configs (configs.json), and for each recipe and stage the outputs of upstream's YOLOv5CocoDataset
with that pipeline for a sequence of indices after np.random.seed(seed) (goldens.json, outputs/*.png).
"""
from __future__ import annotations

import copy
import hashlib
import json
import sys
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
DETECTORS = {"yolov5_s": "yolov5s-spos_0.33M", "yolov6_l_d12": "yolov6s-attentive_a6",
             "rtmdet_tiny": "rtmdet_tiny-ofa_lat31"}
# (recipe, stage, seed, number of samples): enough samples for the caches to fill and the mix-ups to happen
CASES = [("yolov5_s", 1, 3, 4), ("yolov6_l_d12", 1, 12, 6), ("yolov6_l_d12", 2, 5, 4),
         ("rtmdet_tiny", 1, 9, 14), ("rtmdet_tiny", 2, 2, 5)]
CATEGORIES = [{"id": 5, "name": "square"}, {"id": 2, "name": "bar"}, {"id": 9, "name": "disc"}]  # not id order
CLASSES = ("disc", "square", "bar")  # metainfo classes in another order: labels still follow the file


def make_dataset(root: Path) -> None:
    """Coloured shapes on two-tone backgrounds, and annotations that exercise every parsing rule."""
    rng = np.random.default_rng(2024)
    images_dir = root / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    sizes = [(160, 120), (120, 200), (300, 90), (90, 90), (250, 250), (200, 150), (24, 40), (180, 140),
             (140, 180), (210, 110)]
    images, annotations = [], []

    def annotate(image_id, cat, bbox, **extra):
        x, y, w, h = bbox
        annotations.append({"id": 100 + len(annotations), "image_id": image_id, "category_id": cat,
                            "bbox": bbox, "area": extra.pop("area", w * h), "iscrowd": extra.pop("iscrowd", 0),
                            **extra})

    for i, (w, h) in enumerate(sizes):
        image_id = 1000 + 7 * i
        img = np.empty((h, w, 3), np.uint8)
        img[:] = rng.integers(30, 90, 3)
        img[h // 2:, : w // 3] = rng.integers(30, 90, 3)  # flat areas: the recorded outputs compress well
        if i == 5:  # no annotation at all: dropped by filter_empty_gt
            pass
        else:
            for k in range(int(rng.integers(1, 4))):
                bw, bh = int(rng.integers(12, max(13, w // 2))), int(rng.integers(12, max(13, h // 2)))
                x, y = float(rng.integers(0, max(1, w - bw))), float(rng.integers(0, max(1, h - bh)))
                cat = CATEGORIES[k % 3]["id"]
                colour = tuple(int(c) for c in rng.integers(100, 256, 3))
                if cat == 9:
                    cv2.ellipse(img, (int(x + bw / 2), int(y + bh / 2)), (bw // 2, bh // 2), 0, 0, 360, colour, -1)
                else:
                    cv2.rectangle(img, (int(x), int(y)), (int(x + bw) - 1, int(y + bh) - 1), colour, -1)
                annotate(image_id, cat, [x + 0.25, y + 0.5, bw - 0.5, bh - 0.75])
        if i == 1:
            annotate(image_id, 5, [w - 10.0, 20.0, 30.0, 25.0])  # partly outside: kept, unclipped
            annotate(image_id, 2, [5.0, 5.0, 0.5, 20.0])  # narrower than 1 pixel: skipped
            annotate(image_id, 9, [w + 5.0, 5.0, 10.0, 10.0])  # outside the image: skipped
        if i == 2:
            annotate(image_id, 2, [10.0, 10.0, 40.0, 30.0], iscrowd=1)  # a crowd box: ignored
            annotate(image_id, 5, [50.0, 10.0, 20.0, 20.0], area=0)  # area 0: skipped
            annotate(image_id, 9, [80.0, 30.0, 20.0, 20.0], ignore=1)  # ignore: skipped
        cv2.imwrite(str(images_dir / f"img_{i}.png"), img)
        images.append({"id": image_id, "file_name": f"img_{i}.png", "width": w, "height": h})
    # an image whose only annotation is a crowd box: no targets, but kept by filter_empty_gt
    img = np.full((100, 120, 3), 70, np.uint8)
    cv2.imwrite(str(images_dir / "crowd_only.png"), img)
    images.append({"id": 2000, "file_name": "crowd_only.png", "width": 120, "height": 100})
    annotate(2000, 2, [10.0, 10.0, 50.0, 40.0], iscrowd=1)
    # one whose only annotation is ignored: no targets either, and also kept by filter_empty_gt
    cv2.imwrite(str(images_dir / "ignored_only.png"), np.full((90, 110, 3), 80, np.uint8))
    images.append({"id": 2001, "file_name": "ignored_only.png", "width": 110, "height": 90})
    annotate(2001, 5, [20.0, 20.0, 30.0, 30.0], ignore=1)
    data = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    (root / "instances.json").write_text(json.dumps(data, indent=1))


def train_settings(config) -> dict:
    """What the recipe's config says about training data."""
    hooks = {hook["type"]: hook for hook in config.custom_hooks}
    switch = hooks.get("mmdet.PipelineSwitchHook")
    loader = config.train_dataloader
    return {"train_pipeline": config.train_pipeline,
            "train_pipeline_stage2": switch["switch_pipeline"] if switch else None,
            "switch_epoch": switch["switch_epoch"] if switch else None, "max_epochs": config.max_epochs,
            "filter_cfg": loader.dataset.filter_cfg, "batch_size": loader.batch_size,
            "num_workers": loader.num_workers, "img_scale": list(config.img_scale)}


def describe(transform) -> dict:
    """A built upstream transform: its class and its JSON-able attributes (defaults included)."""
    attributes = {}
    for key, value in vars(transform).items():
        if key == "pre_transform":
            value = [describe(t) for t in value.transforms[2:]] if value is not None else []  # after the 2 loads
        elif key == "results_cache":
            continue
        try:
            attributes[key] = json.loads(json.dumps(value))
        except TypeError:
            continue
    return {"type": type(transform).__name__, "attributes": attributes}


def main(fixtures: Path) -> None:
    sys.path.insert(0, str(HERE))
    import up  # noqa: F401  (upstream importable, see README.md)
    from mmengine import Config, DefaultScope
    from mmengine.dataset import sampler as sampler_module
    from mmyolo.registry import DATASETS

    DefaultScope.get_instance("record", scope_name="mmyolo")
    root = HERE / "dataset"
    make_dataset(root)
    (HERE / "outputs").mkdir(exist_ok=True)
    settings, goldens = {}, {"cases": [], "datasets": {}, "samplers": [], "transforms": {}}
    configs = {recipe: Config.fromfile(str(fixtures / folder / "config.py")) for recipe, folder in DETECTORS.items()}
    for recipe, config in configs.items():
        settings[recipe] = json.loads(json.dumps(train_settings(config)))
    for recipe, stage, seed, count in CASES:
        s = train_settings(configs[recipe])  # tuples kept: mmyolo asserts them
        pipeline = s["train_pipeline"] if stage == 1 else s["train_pipeline_stage2"]
        pipeline = [t for t in copy.deepcopy(pipeline) if t["type"] != "mmdet.Albu"]  # razorzoo leaves it out
        dataset = DATASETS.build(dict(type="YOLOv5CocoDataset", data_root=str(root), ann_file="instances.json",
                                      data_prefix=dict(img="images/"), filter_cfg=s["filter_cfg"],
                                      metainfo=dict(classes=CLASSES),
                                      pipeline=pipeline))
        goldens["transforms"][f"{recipe}/{stage}"] = [describe(t) for t in dataset.pipeline.transforms[2:-1]]
        goldens["datasets"][recipe] = [
            {"img_id": info["img_id"], "boxes": [inst["bbox"] for inst in info["instances"] if not inst["ignore_flag"]],
             "labels": [inst["bbox_label"] for inst in info["instances"] if not inst["ignore_flag"]],
             "crowd": [inst["bbox"] for inst in info["instances"] if inst["ignore_flag"]]}
            for info in (dataset.get_data_info(i) for i in range(len(dataset)))]
        indices = [int(i) for i in np.random.default_rng(seed).integers(0, len(dataset), count)]
        np.random.seed(seed)
        outputs = []
        for n, index in enumerate(indices):
            result = dataset[index]
            image = result["inputs"].numpy().transpose(1, 2, 0)
            name = f"{recipe}_stage{stage}_{n}.png"
            cv2.imwrite(str(HERE / "outputs" / name), image)
            instances = result["data_samples"].gt_instances
            outputs.append({"image": name, "sha256": hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest(),
                            "img_id": int(result["data_samples"].img_id),
                            "boxes": instances.bboxes.tensor.tolist(), "labels": instances.labels.tolist()})
        goldens["cases"].append({"recipe": recipe, "stage": stage, "seed": seed, "indices": indices,
                                 "outputs": outputs})
    for seed, epoch, world_size, size in [(0, 0, 1, 11), (7, 3, 2, 11), (5, 1, 3, 10)]:
        for rank in range(world_size):
            sampler_module.get_dist_info = lambda: (rank, world_size)
            sampler = sampler_module.DefaultSampler(list(range(size)), shuffle=True, seed=seed)
            sampler.set_epoch(epoch)
            goldens["samplers"].append({"seed": seed, "epoch": epoch, "rank": rank, "world_size": world_size,
                                        "size": size, "indices": list(sampler)})
    (HERE / "configs.json").write_text(json.dumps(settings, indent=1))
    (HERE / "goldens.json").write_text(json.dumps(goldens, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
