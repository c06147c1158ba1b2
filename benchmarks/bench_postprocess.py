"""Eager post-processing time as a share of the eager network's, on the dense case and at score_thr 0.001.

Usage: ``python benchmarks/bench_postprocess.py [--runs 7] [--threads 1] [--models NAME ...]``

Per detector (fixture-rule weights: nearly every prior scores in a narrow band, the dense case) and threshold, the
median time of ``Detector.postprocess`` on one synthetic 640 x 480 image's head outputs against the network's
(``Detector.forward``), and whether the detections equal, bit for bit as sets, those of the reference formula: the
full ``sort(descending=True)`` mmdet's ``filter_scores_and_topk`` runs (what razorzoo ran before it sorted only the
places it keeps). Goal: post <= 25% of the network at both thresholds.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from razorzoo.deploy.parity import synthetic_images
from razorzoo.detection import postprocess as module
from razorzoo.detection.postprocess import with_overrides

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from helpers import DETECTORS, fixture_model  # noqa: E402
from timing import median  # noqa: E402


def _full_sort(scores: torch.Tensor, score_thr: float, topk: int):
    """mmdet ``filter_scores_and_topk`` verbatim: sort every valid score."""
    valid_mask = scores > score_thr
    scores = scores[valid_mask]
    valid_idxs = torch.nonzero(valid_mask)
    num_topk = min(topk, valid_idxs.size(0))
    scores, idxs = scores.sort(descending=True)
    keep_idxs, labels = valid_idxs[idxs[:num_topk]].unbind(dim=1)
    return scores[:num_topk], labels, keep_idxs


def _as_set(detections) -> list:
    return sorted(zip(detections.scores.tolist(), detections.labels.tolist(), map(tuple, detections.boxes.tolist())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(DETECTORS))
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{'model':<22} {'score_thr':>9} {'net s':>7} {'post s':>7} {'post/net':>8} {'candidates':>10} "
          f"{'same as full sort':>17}")
    for name in args.models:
        net = fixture_model(name)
        batch, metas = net.preprocess([synthetic_images()[0]])
        with torch.inference_mode():
            raw = net(batch)
            seconds_net, _ = median(lambda: net(batch), args.runs, 1)
            for score_thr in (0.25, 0.001):
                cfg = with_overrides(net.test_cfg, score_thr=score_thr)
                post, _ = median(lambda: net.postprocess(raw, metas, score_thr=score_thr), args.runs, 1)
                fast = net.postprocess(raw, metas, score_thr=score_thr)[0]
                original = module.filter_scores_and_topk
                module.filter_scores_and_topk = _full_sort
                try:
                    reference = net.postprocess(raw, metas, score_thr=score_thr)[0]
                finally:
                    module.filter_scores_and_topk = original
                _, scores, objectness = module.decode_outputs(raw, net.coder, net.recipe.strides)
                if objectness is not None:
                    scores = scores * objectness[..., None]
                candidates = int((scores[0] > score_thr).sum())  # (box, class) pairs above the threshold
                print(f"{name:<22} {score_thr:>9} {seconds_net:>7.3f} {post:>7.3f} {post / seconds_net:>7.0%} "
                      f"{candidates:>10} {str(_as_set(fast) == _as_set(reference)):>17}  (nms_pre {cfg.nms_pre})")


if __name__ == "__main__":
    main()
