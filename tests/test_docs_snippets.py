"""Every Python snippet of the README and docs/ runs as written (tests/helpers/snippets.py), each document in order
with its names shared, against razorzoo's own demo mirror (``razorzoo mirror``) for the registry names, a Hub server
for ``hf-hub:`` ids, and a working directory holding the files the snippets name (``street.jpg``, ``val2017/``, ...).

What the test adds is stated here, per document: the names a snippet takes from its prose (``images``), the
placeholders a reader fills in (``<commit>``), and the one size a test cannot afford (a full evolution search).
Budget: dominated by ONNX exports (three detectors, one classifier) and one small search.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage

import razorzoo
from helpers.snippets import python_blocks, run_blocks, substitute
from hub_server import USERS, HubServer
from razorzoo.storage.mirror import MirrorServer, build_mirror
from val_data import PHOTOS, SKIMAGE_DATA, coco_file, generated_image

pytest.importorskip("onnxruntime", reason="the deploy snippets need the onnx extra: pip install -e '.[onnx,openvino]'")

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")], key=lambda p: (p.name != "README.md", p.name))
DOCUMENTS = [path for path in DOCUMENTS if python_blocks(path)]
# every registry name a snippet loads (attentive_a3 brings the AttentiveNAS supernet it is sliced from)
SERVED = ("yolov6s-attentive_a6", "attentive_a6", "rtmdet_tiny-ofa_lat31", "ofa_lat31", "yolov5s-spos_0.33M",
          "attentive_a3", "ofa_supernet")
HUB_REPO = "my-org/yolov6-attentive-300m"  # the README's and docs/hub.md's example repo
# names a snippet takes from the prose around it
PRELUDE = {
    "README.md": "from razorzoo.weights.checkpoint import read_checkpoint\n"
                 "supernet_state_dict = read_checkpoint(SUPERNET).state_dict  # 'a supernet state dict'\n",
    "models.md": "import torch\nimages = torch.rand(2, 3, 224, 224)  # 'images': a batch\n",
    "evaluate.md": "import ray\nray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # a 2-core test\n",
    "train.md": "epoch = 0  # 'for each epoch'\n",
}
# placeholders and sizes: each must apply exactly once
REPLACEMENTS = {
    "README.md": [("@<commit>", "@{commit}")],
    "hub.md": [("@<commit-sha>", "@{commit}")],
    # a full search (population 50, 20 generations at 224 px) takes hours on a test machine: 4 candidates at 64 px
    # int8: the same call on the YOLOv5 detector, whose end-to-end graph OpenVINO compiles in int8 (YOLOv6's is
    # quantized twice, end to end then raw: minutes here)
    "deploy.md": [('razorzoo.export("yolov6s-attentive_a6", "yolov6-int8.xml"',
                   'razorzoo.export("yolov5s-spos_0.33M", "yolov6-int8.xml"')],
    # 100 epochs at 640 px is a day's CPU work: one epoch at 96 px runs the same path (train, validate, best.safetensors)
    "train.md": [('output="runs/cats", epochs=100)', 'output="runs/cats", epochs=1, img_size=96, batch=2)')],
    "specialize.md": [('out="my_subnet/")', 'out="my_subnet/", population=4, generations=1, resolution=64)')],
}


def _photo(name: str) -> np.ndarray:
    return cv2.imread(str(SKIMAGE_DATA / name), cv2.IMREAD_COLOR)


def _files(cwd: Path) -> None:
    """The files the snippets name, in the working directory they run in."""
    cv2.imwrite(str(cwd / "street.jpg"), _photo("rocket.jpg"))
    cv2.imwrite(str(cwd / "cat.jpg"), _photo("chelsea.png"))
    cv2.imwrite(str(cwd / "dog.png"), _photo("astronaut.png"))
    cv2.imwrite(str(cwd / "a.jpg"), generated_image(320, 240, seed=1))
    cv2.imwrite(str(cwd / "b.jpg"), generated_image(240, 320, seed=2))
    writer = cv2.VideoWriter(str(cwd / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 5, (320, 240))
    for seed in range(3):
        writer.write(generated_image(320, 240, seed=seed))
    writer.release()
    (cwd / "val2017").mkdir()
    for name in PHOTOS:
        cv2.imwrite(str(cwd / "val2017" / name), _photo(name))
    boxes = {"rocket.jpg": [("person", [100.0, 50.0, 120.0, 200.0])],
             "chelsea.png": [("cat", [140.0, 80.0, 150.0, 150.0])]}
    sizes = [(name, width, height) for name, (width, height, _) in PHOTOS.items()]
    coco_file(cwd / "instances_val2017.json", boxes, images=sizes)
    for split in ("train", "val"):  # docs/train.md's training and validation sets
        shutil.copytree(cwd / "val2017", cwd / "data" / split)
        coco_file(cwd / "data" / f"{split}.json", boxes, images=sizes)
    (cwd / "calib").mkdir()  # docs/deploy.md's int8 calibration images
    for name in PHOTOS:
        shutil.copy(SKIMAGE_DATA / name, cwd / "calib" / name)
    for folder, names in {"photos": PHOTOS, "labelled/281_tabby": ["chelsea.png"], "labelled/812": ["rocket.jpg"],
                          "imagenet/train_sample/n02123045": PHOTOS}.items():
        (cwd / folder).mkdir(parents=True)
        for name in names:
            shutil.copy(SKIMAGE_DATA / name, cwd / folder / name)
    shipped = razorzoo.get_card("attentive_a6").subnet_path
    (cwd / "path" / "to").mkdir(parents=True)
    shutil.copy(razorzoo.get_card("ofa_lat31").subnet_path, cwd / "path" / "to" / "MY_SUBNET.yaml")
    shutil.copy(shipped, cwd / "best_fix_subnet.yaml")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """(working directory, environment, names for the preludes): the mirror and the Hub served for the module."""
    root = tmp_path_factory.mktemp("docs")
    mirror = build_mirror(root / "mirror", SERVED)
    supernet = next(path for path in mirror.files if "attentive_mobilenet_supernet" in path.name)
    cwd = root / "cwd"
    cwd.mkdir()
    _files(cwd)
    with MirrorServer(mirror.www) as served, HubServer() as hub, pytest.MonkeyPatch.context() as env:
        env.setitem(USERS, "hf_docs", ("docs", ("my-org",)))
        for name, value in {"RAZORZOO_MIRROR": served.url, "RAZORZOO_CARDS": str(mirror.cards),
                            "RAZORZOO_CACHE": str(root / "cache"), "HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_docs",
                            "HF_HOME": str(root / "hf-home")}.items():
            env.setenv(name, value)
        env.delenv("RAZORZOO_OFFLINE", raising=False)
        env.delenv("HF_HUB_OFFLINE", raising=False)
        weights = next(path for path in mirror.files if path.name.startswith("yolov6_l_attentivenas"))
        razorzoo.push_to_hub(HUB_REPO, subnet=razorzoo.get_card("yolov6s-attentive_a6").subnet_path,
                             weights=weights, base="yolov6s-attentive_a6")
        yield cwd, {"commit": hub.repos[HUB_REPO].branches["main"], "SUPERNET": str(supernet)}


@pytest.mark.slow
@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_the_snippets_run_as_written(document, workspace, monkeypatch):
    cwd, names = workspace
    monkeypatch.chdir(cwd)
    blocks = substitute(python_blocks(document), [(old, new.format(**names))
                                                  for old, new in REPLACEMENTS.get(document.name, [])])
    namespace: dict = {"__name__": "__snippets__", "SUPERNET": names["SUPERNET"]}
    exec(PRELUDE.get(document.name, ""), namespace)
    try:
        report = run_blocks(blocks, namespace, str(document.relative_to(REPO)))
    finally:
        if "ray" in namespace:
            namespace["ray"].shutdown()
    assert report.snippets == len(blocks) > 0 and report.statements > 0
    if document.name == "zoo.md":  # the comments that promise an exception or a value were held to it
        assert report.raised_as_promised == 1 and report.values_checked >= 1
    if document.name == "models.md":
        assert report.values_checked >= 1  # bb.out_channels, bb.strides


def test_every_document_with_python_is_covered():
    """New docs are picked up by the glob; this pins the ones known to have snippets, so none silently drops out."""
    assert {path.name for path in DOCUMENTS} >= {"README.md", "deploy.md", "detectors.md", "evaluate.md", "hub.md",
                                                 "loading.md", "models.md", "predict.md", "specialize.md", "train.md",
                                                 "zoo.md"}
