"""CPU latency of the detectors on each backend: eager, fused, ONNX Runtime, OpenVINO f32 and bf16.

Usage: ``python benchmarks/bench_backends.py [--runs 7] [--warmup 2] [--threads 1 2] [--models NAME ...]``

For each model, exported once with ``razorzoo.export``, and each thread count: the median over ``--runs`` calls
(after ``--warmup``) of the network alone on a preprocessed 640 x 480 image, and of ``predict`` end to end split into
pre-processing, network and post-processing; ratios are to eager. Weights are the tests' fixture rule
(tests/fixture_rule.py): random weights score every prior ~0.5, so post-processing would NMS thousands of ties,
which no trained model does; the fixture weights give structured outputs (the goldens' detections).
``match`` is the share of eager's detections the backend reproduces (razorzoo.deploy.match_detections, both
directions, eager's test_cfg). bf16 needs a CPU with BF16 support (OpenVINO's ``OPTIMIZATION_CAPABILITIES``).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import sys

import torch

import razorzoo
from razorzoo.deploy import open_exported
from razorzoo.deploy.parity import match_detections, synthetic_images
from razorzoo.errors import RazorzooError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fixture_rule import rule_state_dict  # noqa: E402
from timing import median  # noqa: E402

MODELS = ("yolov5s-spos_0.33M", "yolov6s-attentive_a6", "rtmdet_tiny-ofa_lat31")
BACKENDS = ("eager", "fused", "onnxruntime", "openvino-f32", "openvino-bf16")


def _predict_split(model, image, runs: int, warmup: int, score_thr: float | None
                   ) -> tuple[float, float, float, list]:
    """Medians of pre-processing, network and post-processing of ``predict`` on one image, and its detections."""
    pre, _ = median(lambda: model.preprocess([image]), runs, warmup)
    batch, metas = model.preprocess([image])
    with torch.inference_mode():
        infer, raw = median(lambda: model(batch), runs, warmup)
        post, detections = median(lambda: model.postprocess(raw, metas, score_thr=score_thr), runs, warmup)
    return pre, infer, post, detections


def _models(name: str, onnx_path: Path, threads: int) -> dict[str, object]:
    eager, fused = razorzoo.build_detector(name), razorzoo.build_detector(name)
    for model in (eager, fused):
        model.load_state_dict(rule_state_dict(name))
        model.tie_weights()
    fused.fuse()
    models = {"eager": eager, "fused": fused}
    if not onnx_path.exists():
        razorzoo.export(eager, onnx_path, check=False)
    models["onnxruntime"] = open_exported(onnx_path, backend="onnxruntime", threads=threads)
    for precision in ("f32", "bf16"):
        try:
            models[f"openvino-{precision}"] = open_exported(onnx_path, backend="openvino", precision=precision,
                                                            threads=threads)
        except RazorzooError as exc:
            print(f"# openvino-{precision}: {exc}")
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--score-thr", type=float, help="predict's score threshold (default: the recipe's test_cfg, "
                                                        "0.001 / 0.05: the evaluation setting, NMS-heavy)")
    args = parser.parse_args()
    if args.runs < 5:
        parser.error("--runs must be at least 5 (the figure is a median)")

    image = synthetic_images()[0]
    header = (f"{'model':<22} {'thr':>3} {'backend':<14} {'net s':>7} {'net/eag':>7} {'pre s':>6} {'infer s':>7} "
              f"{'post s':>6} {'e2e s':>6} {'e2e/eag':>7} {'match':>9}")
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            torch.manual_seed(0)
            for threads in args.threads:
                torch.set_num_threads(threads)
                models = _models(name, Path(tmp) / f"{name}.onnx", threads)
                eager = models["eager"]
                cfg = eager.recipe.test_cfg
                batch, _ = eager.preprocess([image])
                score_thr = cfg.score_thr if args.score_thr is None else args.score_thr
                reference = None
                for backend in BACKENDS:
                    if backend not in models:
                        print(f"{name:<22} {threads:>3} {backend:<14} {'n/a on this CPU':>7}")
                        continue
                    model = models[backend]
                    with torch.inference_mode():
                        net, _ = median(lambda: model(batch), args.runs, args.warmup)
                    pre, infer, post, (detections,) = _predict_split(model, image, args.runs, args.warmup,
                                                                     args.score_thr)
                    e2e = pre + infer + post
                    if reference is None:
                        reference = net, e2e, detections
                    matched = total = 0
                    for a, b in ((reference[2], detections), (detections, reference[2])):
                        m, t = match_detections(a, b, score_thr=score_thr, max_det=cfg.max_per_img,
                                                iou_thr=cfg.iou_threshold)
                        matched, total = matched + m, total + t
                    print(f"{name:<22} {threads:>3} {backend:<14} {net:>7.3f} {net / reference[0]:>7.2f} "
                          f"{pre:>6.3f} {infer:>7.3f} {post:>6.3f} {e2e:>6.3f} {e2e / reference[1]:>7.2f} "
                          f"{matched:>4}/{total:<4}")
    print("targets: e2e/eag <= 0.5 on onnxruntime or openvino-f32 with 100% match; bf16 <= 0.25 with >= 99%")


if __name__ == "__main__":
    main()
