"""End-to-end latency (image file to detections) of each way to run a detector, side by side with MMYOLO.

Usage: ``python benchmarks/bench_e2e.py [--models NAME ...] [--runs 5] [--warmup 2] [--threads 1]
[--upstream-python /path/to/refenv/bin/python] [--calib DIR] [--settings predict eval]``

Per model and setting, the median over ``--runs`` calls (after ``--warmup``) of ``predict(image file)`` for: eager
PyTorch; ONNX Runtime and OpenVINO f32 with the ``raw`` export (NMS in Python) and the ``nms`` export (decoding and
NMS in the runtime: what ``load_detector(name, backend=...)`` uses); OpenVINO bf16 and int8 with the ``nms`` export
(where the CPU has them; int8 needs the ``[int8]`` extra and is calibrated with ``--calib``, default: the tests'
sample photos and drawings; it uses the ``raw`` export where OpenVINO cannot compile the end-to-end one in int8).
With ``--upstream-python``, MMYOLO's ``inference_detector`` on the same weights and image runs in that environment in
the same run (``benchmarks/upstream_e2e.py``) and ratios are to it; else to eager.

Settings: ``predict`` = score_thr 0.25 (a deployment threshold), ``eval`` = the recipe's ``test_cfg`` (0.001 for
YOLO: NMS-heavy). Weights are the tests' fixture rule (tests/fixture_rule.py) and the image the fixtures' own
(tests/data/<model>/image.png). ``match``: f32 rows, eager's detections reproduced / required, both directions,
ties at a cutoff excused (razorzoo.deploy.match_detections, the export gate's tolerances); bf16/int8 rows (and
MMYOLO's), the share of eager's detections of the same class overlapping one of theirs with IoU >= 0.5, both ways.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

import razorzoo
from razorzoo.deploy.export import end_to_end_or_raw
from razorzoo.deploy.parity import match_by_overlap, match_detections
from razorzoo.detection.results import Detections
from razorzoo.errors import RazorzooError
from razorzoo.zoo.registry import get_card

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from fixture_rule import rule_state_dict  # noqa: E402
from helpers import DATA, fixture_model  # noqa: E402
from timing import median  # noqa: E402

MODELS = ("yolov5s-spos_0.33M", "yolov6s-attentive_a6", "rtmdet_tiny-ofa_lat31")
SETTINGS = {"predict": 0.25, "eval": None}  # score_thr; None: the recipe's test_cfg


def _runtimes(name: str, folder: Path, threads: int, calib: Path | None) -> dict[str, object]:
    """Every way to run ``name`` (the rows), exported once into ``folder``."""
    import openvino

    eager = fixture_model(name)
    capabilities = openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    rows: dict[str, object] = {"eager": eager}
    for variant in ("raw", "nms"):
        path = folder / f"{name}-{variant}.onnx"
        razorzoo.export(eager, path, variant=variant, check=False)
        rows[f"onnxruntime {variant}"] = razorzoo.load_detector(path, backend="onnxruntime", threads=threads)
        rows[f"openvino-f32 {variant}"] = razorzoo.load_detector(path, backend="openvino", threads=threads)
    if "BF16" in capabilities:
        rows["openvino-bf16 nms"] = razorzoo.load_detector(folder / f"{name}-nms.onnx", backend="openvino",
                                                           precision="bf16", threads=threads)
    else:
        print(f"# {name}: openvino-bf16 n/a (CPU capabilities: {', '.join(capabilities)})")
    try:  # the end-to-end graph when OpenVINO compiles it in int8, else the raw one (as load_detector does)
        result = end_to_end_or_raw(lambda variant: razorzoo.export(
            eager, folder / f"{name}-{variant}-int8.xml", variant=variant, check=False, int8=True, calib=calib), name)
        variant = result.path.stem.split("-")[-2]
        rows[f"openvino-int8 {variant}"] = razorzoo.load_detector(result.path, backend="openvino", threads=threads)
        print(f"# {name}: {result.int8_cost}")
    except RazorzooError as exc:
        print(f"# {name}: openvino-int8 n/a ({exc})")
    return rows


def _upstream(python: str, name: str, image: Path, score_thr: float | None, args: argparse.Namespace,
              folder: Path) -> tuple[float, Detections]:
    """MMYOLO's ``inference_detector`` in the reference environment: its median seconds and detections."""
    weights, out = folder / f"{name}.pt", folder / f"{name}-upstream.json"
    if not weights.exists():
        torch.save(dict(rule_state_dict(name)), weights)
    config = get_card(name).front_matter["razorzoo"]["provenance"]["upstream_config"].removeprefix("mmyolo:configs/")
    command = [python, str(ROOT / "benchmarks" / "upstream_e2e.py"), "--config", config,
               "--subnet", str(DATA / name / "subnet.yaml"), "--weights", str(weights), "--image", str(image),
               "--runs", str(args.runs), "--warmup", str(args.warmup), "--threads", str(args.threads),
               "--out", str(out)] + ([] if score_thr is None else ["--score-thr", str(score_thr)])
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": ""}
    subprocess.run(command, check=True, env=env, cwd=folder)
    found = json.loads(out.read_text())
    names = fixture_model(name).class_names
    return found["seconds"], Detections(torch.tensor(found["boxes"]).view(-1, 4), torch.tensor(found["scores"]),
                                        torch.tensor(found["labels"]), names)


def _match(reference: Detections, detections: Detections, cfg, score_thr: float, exact: bool) -> str:
    if exact:
        matched = total = 0
        for a, b in ((reference, detections), (detections, reference)):
            m, t = match_detections(a, b, score_thr=score_thr, max_det=cfg.max_per_img, iou_thr=cfg.iou_threshold)
            matched, total = matched + m, total + t
        return f"{matched}/{total}"
    kept = match_by_overlap(reference, detections, 0.5) + match_by_overlap(detections, reference, 0.5)
    return f"{kept}/{len(reference) + len(detections)} ~"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--upstream-python", metavar="PATH",
                        help="python of a reference OpenMMLab environment (../shared/refenv/make_refenv.sh)")
    parser.add_argument("--calib", metavar="DIR", help="int8 calibration images (default: the tests' samples)")
    args = parser.parse_args()
    if args.runs < 5:
        parser.error("--runs must be at least 5 (the figure is a median)")
    torch.set_num_threads(args.threads)
    print(f"# {args.threads} thread(s); torch {torch.__version__}; median of {args.runs} after {args.warmup} warm-up")
    header = f"{'model':<22} {'setting':<8} {'runs on':<20} {'e2e s':>7} {'ratio':>6} {'match':>11}"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        calib = Path(args.calib) if args.calib else None
        if calib is None:
            from val_data import write_images

            calib = folder / "calib"
            write_images(calib)
        print(header)
        print("-" * len(header))
        for name in args.models:
            rows = _runtimes(name, folder, args.threads, calib)
            image = DATA / name / "image.png"
            cfg = rows["eager"].test_cfg
            for setting in args.settings:
                score_thr = SETTINGS[setting]
                threshold = cfg.score_thr if score_thr is None else score_thr
                timed = {}
                if args.upstream_python:
                    timed["MMYOLO"] = _upstream(args.upstream_python, name, image, score_thr, args, folder)
                with torch.inference_mode():
                    for label, model in rows.items():
                        timed[label] = median(lambda: model.predict(str(image), score_thr=score_thr), args.runs,
                                               args.warmup)
                base = timed["MMYOLO" if args.upstream_python else "eager"][0]
                reference = timed["eager"][1]
                for label, (seconds, detections) in timed.items():
                    exact = label in ("eager",) or "-f32" in label or label.startswith("onnxruntime")
                    match = _match(reference, detections, cfg, threshold, exact)
                    print(f"{name:<22} {setting:<8} {label:<20} {seconds:>7.3f} {seconds / base:>5.2f}x {match:>11}")
    print("goals (to MMYOLO, 1 thread): f32 on a runtime <= 0.35x, bf16 <= 0.2x (>= 99% matched), int8 <= 0.12x, "
          "eager <= 0.6x; '~' = matched by class and IoU >= 0.5 (reduced precision)")


if __name__ == "__main__":
    main()
