"""Model names, published parameter counts, and small helpers every model test uses."""
from __future__ import annotations

from pathlib import Path

import torch

DATA = Path(__file__).parents[1] / "data"
CLASSIFIERS = ("spos_0.33M", "attentive_a6", "ofa_lat31")
DETECTORS = ("yolov5s-spos_0.33M", "yolov6s-attentive_a6", "rtmdet_tiny-ofa_lat31")
# the detection recipe of each detector in RECIPES
RECIPE_OF = {"yolov5s-spos_0.33M": "yolov5_s", "yolov6s-attentive_a6": "yolov6_l_d12",
             "rtmdet_tiny-ofa_lat31": "rtmdet_tiny"}
# model.test_cfg.max_per_img of the MMYOLO configs: the cap at which detections tied at the cutoff score appear
MAX_PER_IMG = {"yolov5s-spos_0.33M": 300, "yolov6s-attentive_a6": 300, "rtmdet_tiny-ofa_lat31": 100}
# published parameter counts, unique parameters: the MMRazor subnet model cards (classifiers) and
# mmyolo configs/razor/subnets/README.md (detectors)
CLASSIFIER_PARAMS = {"spos_0.33M": 3_353_592, "attentive_a6": 15_896_752, "ofa_lat31": 4_595_536}
DETECTOR_PARAMS = {"yolov5s-spos_0.33M": 7_041_517, "yolov6s-attentive_a6": 18_375_008,
                   "rtmdet_tiny-ofa_lat31": 3_910_656}


def fixture_model(model: str) -> torch.nn.Module:
    """A detector or classifier holding the fixture-rule weights (tied weights re-shared), in eval mode: what the
    goldens were recorded from."""
    import razorzoo
    from fixture_rule import rule_state_dict

    net = razorzoo.build_detector(model) if model in DETECTORS else razorzoo.build_classifier(model)
    net.load_state_dict(rule_state_dict(model), strict=True)
    if hasattr(net, "tie_weights"):
        net.tie_weights()
    return net.eval()


def loaded_detector(model: str):
    """``razorzoo.build_detector(model)`` holding the fixture-rule weights the goldens were recorded with."""
    import razorzoo
    from fixture_rule import rule_state_dict

    detector = razorzoo.build_detector(model)
    detector.load_state_dict(rule_state_dict(model), strict=True)
    return detector


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute difference of two tensors of the same shape."""
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


def flat_outputs(output) -> torch.Tensor:
    """Every tensor of a (nested tuples/lists of) model output, flattened and concatenated in order."""
    if isinstance(output, torch.Tensor):
        return output.flatten()
    return torch.cat([flat_outputs(o) for o in output])
