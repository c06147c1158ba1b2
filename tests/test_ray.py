"""The Ray Data adapter on a local Ray instance with 2 workers equals single-process predict, for each input column
(``path``, ``image`` RGB arrays, ``bytes``), with more rows in a Ray batch than in one forward pass (budget ~60 s)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

import razorzoo
from razorzoo.bounded import InputError
from razorzoo.detection.results import Detections
from razorzoo.errors import DatasetError, ImageError
from razorzoo.evaluation.ray_adapter import RayDetector
from helpers import unmatched_detections
from val_data import converted_model, write_images

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'razorzoo[ray]'")

MODEL = "rtmdet_tiny-ofa_lat31"
NAMES = ["chelsea.png", "rocket.jpg", "portrait.png"]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    return converted_model(MODEL, tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    return folder, write_images(folder)


@pytest.fixture(scope="module")
def expected(converted, photos):
    """Single-process ``predict`` of each image (BGR, as OpenCV decodes the files)."""
    detector = razorzoo.load_detector(converted)
    return detector, {name: detector.predict(photos[1][name]) for name in NAMES}


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    yield ray
    ray.shutdown()


def _detections(row, class_names) -> Detections:
    return Detections(torch.tensor(np.asarray(row["boxes"], np.float32)).view(-1, 4),
                      torch.tensor(np.asarray(row["scores"], np.float32)),
                      torch.tensor(np.asarray(row["labels"], np.int64)), class_names)


def _assert_rows_equal_predict(rows, key, expected):
    detector, wanted = expected
    assert sorted(row[key] for row in rows) == sorted(NAMES)
    for row in rows:
        found = _detections(row, detector.class_names)
        assert len(wanted[row[key]]) > 0
        assert not unmatched_detections(found, wanted[row[key]], detector.test_cfg.max_per_img), row[key]


def test_map_batches_on_two_workers_equals_predict(local_ray, converted, photos, expected):
    folder, _ = photos
    ds = local_ray.data.from_items([{"path": str(folder / name)} for name in NAMES])
    rows = ds.map_batches(RayDetector, fn_constructor_kwargs={"model": converted}, concurrency=2,
                          batch_size=1, num_cpus=1).take_all()
    for row in rows:
        row["name"] = row["path"].rsplit("/", 1)[1]
    _assert_rows_equal_predict(rows, "name", expected)


def test_rgb_image_column_in_batches_larger_than_a_forward_pass(local_ray, converted, photos, expected):
    """``image`` holds RGB arrays (as ``read_images`` gives); three rows per Ray batch and two images per forward
    pass: every row of both inner batches comes back, with the detections of the image in its true colours."""
    _, arrays = photos
    detector, wanted = expected
    # red and blue swapped is another image to the model: the comparison below would see it
    swapped = detector.predict(np.ascontiguousarray(arrays["chelsea.png"][..., ::-1]))
    assert unmatched_detections(swapped, wanted["chelsea.png"], detector.test_cfg.max_per_img)
    ds = local_ray.data.from_items([{"name": name, "image": np.ascontiguousarray(arrays[name][..., ::-1])}
                                    for name in NAMES])
    rows = ds.map_batches(RayDetector, fn_constructor_kwargs={"model": converted, "batch": 2}, concurrency=1,
                          batch_size=3, num_cpus=1).take_all()
    assert len(rows) == 3 and all("image" not in row for row in rows)  # the large input column is dropped
    _assert_rows_equal_predict(rows, "name", expected)


def test_bytes_column_and_other_columns_pass_through(converted, photos, expected):
    """The callable itself, as a Ray worker calls it: encoded ``bytes`` (``read_binary_files``), two forward passes
    for three rows, the row's other columns kept; a batch without an image column is one clear error."""
    folder, _ = photos
    rows = {"name": np.array(NAMES), "bytes": np.array([(folder / n).read_bytes() for n in NAMES], dtype=object)}
    out = RayDetector(converted, batch=2)(rows)
    assert set(out) == {"name", "boxes", "scores", "labels"}
    _assert_rows_equal_predict([{k: out[k][i] for k in out} for i in range(3)], "name", expected)
    with pytest.raises(DatasetError, match=r"needs a 'path', 'bytes' or 'image' column, got \['name'\]"):
        RayDetector(converted)({"name": np.array(NAMES)})
    _, png = cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))
    assert len(RayDetector(converted)({"bytes": np.array([png.tobytes()], dtype=object)})["boxes"]) == 1


def test_the_constructors_options_reach_load_detector_and_predict(exports, photos):
    """The callable in this process (as a Ray worker calls it; a mutation tool sees only in-process calls): ``backend``
    loads an exported file on its runtime (which a file needs), ``score_thr``/``max_det`` filter every row exactly as
    ``predict`` does, for ``path`` rows and RGB ``image`` rows in two forward passes; undecodable ``bytes`` are one
    clear error naming their size."""
    _, path = exports(MODEL)
    folder, arrays = photos
    runtime = razorzoo.load_detector(path, backend="onnxruntime")
    thresholds = {"score_thr": 0.3, "max_det": 5}
    detector = RayDetector(path, backend="onnxruntime", batch=2, **thresholds)
    by_path = detector({"name": np.array(NAMES), "path": np.array([str(folder / name) for name in NAMES])})
    rgb = np.empty(len(NAMES), dtype=object)
    rgb[:] = [np.ascontiguousarray(arrays[name][..., ::-1]) for name in NAMES]
    by_image = detector({"name": np.array(NAMES), "image": rgb})
    assert set(by_path) == {"name", "path", "boxes", "scores", "labels"} and set(by_image) == {"name", "boxes",
                                                                                                "scores", "labels"}
    for i, name in enumerate(NAMES):
        everything, wanted = runtime.predict(folder / name), runtime.predict(folder / name, **thresholds)
        assert len(everything) > len(wanted) > 0  # the thresholds make a difference on this image
        for out in (by_path, by_image):
            found = _detections({k: out[k][i] for k in out}, runtime.class_names)
            assert not unmatched_detections(found, wanted, 5) and len(found) == len(wanted), name
    with pytest.raises(ImageError) as info:
        RayDetector(path, backend="onnxruntime")({"bytes": np.array([b"not an image"], dtype=object)})
    assert str(info.value) == "cannot decode 12 bytes as an image"
    for batch, wrong in ((0, "must be >= 1 and <= 1024, not 0"), (-1, "must be >= 1 and <= 1024, not -1"),
                         (1025, "must be >= 1 and <= 1024, not 1025"), (2.0, "must be an integer, not 2.0"),
                         (True, "must be a number, not True")):
        with pytest.raises(InputError) as info:
            RayDetector(path, backend="onnxruntime", batch=batch)
        assert str(info.value) == f"RayDetector's batch {wrong}"
