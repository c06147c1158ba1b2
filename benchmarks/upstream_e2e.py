"""MMYOLO's ``inference_detector`` end to end, timed: the upstream side of ``bench_e2e.py``.

Runs in a reference OpenMMLab environment (``../shared/refenv/make_refenv.sh``), never in razorzoo's: ``bench_e2e.py
--upstream-python PATH`` starts it with that environment's python. It builds the model from MMYOLO's own config
(shipped in the mmyolo package, ``.mim/configs``) with the given subnet YAML, loads the given state dict (strict),
sets ``test_cfg.score_thr``, and times ``inference_detector(model, image)`` (image file to detections).

Usage: ``python upstream_e2e.py --config razor/subnets/X.py --subnet subnet.yaml --weights state.pt --image I.png
--score-thr 0.25 --runs 5 --warmup 2 --threads 1 --out result.json``
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import warnings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="path under mmyolo's configs/, e.g. razor/subnets/....py")
    parser.add_argument("--subnet", required=True)
    parser.add_argument("--weights", required=True, help="a torch.save'd dict of tensors under upstream keys")
    parser.add_argument("--image", required=True)
    parser.add_argument("--score-thr", type=float)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    import torch
    import mmyolo
    from mmdet.apis import inference_detector, init_detector
    from mmengine.config import Config
    from mmyolo.utils import register_all_modules

    torch.set_num_threads(args.threads)
    register_all_modules()
    cfg = Config.fromfile(os.path.join(os.path.dirname(mmyolo.__file__), ".mim", "configs", args.config))
    cfg.model.backbone.fix_subnet = os.path.abspath(args.subnet)  # not the URL: no download
    cfg.model.backbone.init_cfg = None
    cfg.model.backbone.get("architecture", {}).pop("init_cfg", None)
    if args.score_thr is not None:
        cfg.model.test_cfg.score_thr = args.score_thr
    model = init_detector(cfg, None, device="cpu")
    model.load_state_dict(torch.load(args.weights, weights_only=True), strict=True)
    model.eval()
    times, result = [], None
    for i in range(args.warmup + args.runs):
        start = time.perf_counter()
        result = inference_detector(model, args.image)
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    found = result.pred_instances
    with open(args.out, "w") as f:
        json.dump({"seconds": statistics.median(times), "boxes": found.bboxes.tolist(),
                   "scores": found.scores.tolist(), "labels": found.labels.tolist()}, f)


if __name__ == "__main__":
    main()
