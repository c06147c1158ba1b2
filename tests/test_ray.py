"""The Ray Data adapter on a local Ray instance with 2 workers equals single-process predict (budget ~60 s)."""
from __future__ import annotations


import numpy as np
import pytest
import torch

import razorzoo
from razorzoo.detection.results import Detections
from razorzoo.evaluation.ray_adapter import RayDetector
from val_data import converted_model, unmatched, write_images

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'razorzoo[ray]'")

MODEL = "rtmdet_tiny-ofa_lat31"


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    return converted_model(MODEL, tmp_path_factory.mktemp("model"))


def test_map_batches_on_two_workers_equals_predict(converted, tmp_path):
    arrays = write_images(tmp_path)
    names = ["chelsea.png", "rocket.jpg", "portrait.png"]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    try:
        ds = ray.data.from_items([{"path": str(tmp_path / name)} for name in names])
        rows = ds.map_batches(RayDetector, fn_constructor_kwargs={"model": converted}, concurrency=2,
                              batch_size=1, num_cpus=1).take_all()
    finally:
        ray.shutdown()
    detector = razorzoo.load_detector(converted)
    assert sorted(row["path"] for row in rows) == sorted(str(tmp_path / name) for name in names)
    for row in rows:
        found = Detections(torch.tensor(np.asarray(row["boxes"], np.float32)),
                           torch.tensor(np.asarray(row["scores"], np.float32)),
                           torch.tensor(np.asarray(row["labels"], np.int64)), detector.class_names)
        expected = detector.predict(arrays[row["path"].rsplit("/", 1)[1]])
        assert len(found) == len(expected) > 0 and unmatched(found, expected) == 0
