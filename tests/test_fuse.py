"""``Detector.fuse()``: BatchNorm folded into convolutions, same outputs, in place."""
from __future__ import annotations

import pytest
import torch

import razorzoo
from helpers import DETECTORS, loaded_detector
from razorzoo.errors import RazorzooError


def _count_bn(module: torch.nn.Module) -> int:
    return sum(isinstance(m, torch.nn.BatchNorm2d) for m in module.modules())


@pytest.mark.parametrize("model", DETECTORS)
def test_fused_outputs_match_unfused(model):
    detector = loaded_detector(model)
    x = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = detector(x)
    assert _count_bn(detector) > 50
    assert detector.fuse() is detector
    assert _count_bn(detector) == 0
    with torch.no_grad():
        fused = detector(x)
    assert len(fused) == len(expected)
    worst = max((a - b).abs().max().item() for fa, fb in zip(fused, expected) for a, b in zip(fa, fb))
    assert worst <= 1e-4
    assert not any(".bn." in key for key in detector.state_dict())


def test_fuse_is_idempotent_and_refuses_training_mode():
    detector = loaded_detector("rtmdet_tiny-ofa_lat31")
    detector.fuse()
    state = {k: v.clone() for k, v in detector.state_dict().items()}
    detector.fuse()
    assert state.keys() == detector.state_dict().keys()
    assert all(torch.equal(v, state[k]) for k, v in detector.state_dict().items())

    training = razorzoo.build_detector("yolov5s-spos_0.33M").train()
    with pytest.raises(RazorzooError, match="eval"):
        training.fuse()


def test_fuse_unties_rtmdet_shared_convs_per_level():
    """Each level folds its own BN into the shared conv, so the fused convs differ (and tie_weights leaves them)."""
    detector = loaded_detector("rtmdet_tiny-ofa_lat31").fuse()
    head = detector.bbox_head.head_module
    weights = [head.cls_convs[level][0].conv.weight for level in range(3)]
    assert weights[0] is not weights[1] and not torch.equal(weights[0], weights[1])
    detector.tie_weights()
    assert head.cls_convs[0][0].conv.weight is weights[0]


def test_fuse_keeps_conv_wrapper_bias():
    """YOLOv6 ConvWrapper has a conv bias *and* BN: the fold must include the original bias."""
    detector = loaded_detector("yolov6s-attentive_a6")
    wrapper = detector.neck.bottom_up_layers[0].block.conv1.conv1.block
    conv, bn = wrapper.conv, wrapper.bn
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    expected_bias = (conv.bias - bn.running_mean) * scale + bn.bias
    detector.fuse()
    torch.testing.assert_close(wrapper.conv.bias, expected_bias)
