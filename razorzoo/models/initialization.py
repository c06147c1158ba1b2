"""How MMYOLO initialises a detector it is about to train from a backbone checkpoint (docs/upstream.md §11.5).

Upstream builds the detector, ``sub_model`` loads the backbone's ``Pretrained`` weights and then runs the backbone's
``init_weights``, and the detector's ``init_weights`` initialises neck and head. Each part has its own rule:

* AttentiveNAS / OFA backbones (``zero_init_residual=True``): after the pretrained load, the ``linear_conv``
  BatchNorm of every block with a residual or attentive shortcut is set to weight 0, bias 0 — each residual block
  starts as its shortcut. SPOS keeps its pretrained weights as loaded.
* YOLOv5 and YOLOv6 necks: every ``Conv2d`` ``reset_parameters()`` (torch's default); BatchNorms, ``ConvTranspose2d``
  and BottleRep's ``alpha`` as constructed (1/0, torch's default, 1).
* CSPNeXt neck (RTMDet): its Kaiming init config, then every mmcv ``ConvModule``'s own ``kaiming_init``
  (normal, ``fan_out``, ReLU gain, bias 0), which runs last and wins; norms 1/0.
* Heads: YOLOv5 ``convs_pred`` torch default plus the bias priors; YOLOv6 ``ConvModule``s kaiming as above,
  ``cls_preds`` weight 0 / bias ``bias_init_with_prob(0.01)``, ``reg_preds`` weight 0 / bias 1; RTMDet every conv
  ``normal(0, 0.01)`` (bias 0), norms 1, ``rtm_cls`` bias ``bias_init_with_prob(0.01)``.

Random draws come from torch's global generator (``torch.manual_seed`` makes them repeatable).
"""
from __future__ import annotations

import torch
from torch import nn

from razorzoo.models.heads import RTMDetSepBNHeadModule, YOLOv5HeadModule, YOLOv6HeadModule, PRIOR_PROB_BIAS
from razorzoo.models.layers import ConvModule
from razorzoo.models.mobilenet import MBBlock
from razorzoo.models.necks import CSPNeXtPAFPN

__all__ = ["init_for_training"]


def _reset_norms(module: nn.Module) -> None:
    for norm in module.modules():
        if isinstance(norm, nn.modules.batchnorm._BatchNorm):
            norm.reset_parameters()  # weight 1, bias 0, running statistics 0 / 1, as constructed


def _kaiming_convmodules(module: nn.Module) -> None:
    """mmcv ``ConvModule.init_weights``: ``kaiming_init(conv, a=0, mode='fan_out', nonlinearity='relu',
    distribution='normal')`` with bias 0, then the norm at 1/0."""
    for block in module.modules():
        if isinstance(block, ConvModule):
            nn.init.kaiming_normal_(block.conv.weight, a=0, mode="fan_out", nonlinearity="relu")
            if block.conv.bias is not None:
                nn.init.zeros_(block.conv.bias)


def zero_init_residual(backbone: nn.Module) -> int:
    """``AttentiveMobileNetV3.init_weights(zero_init_residual=True)``: zero the ``linear_conv`` BatchNorm of every
    block with a shortcut; returns how many blocks (a no-op for SPOS, which has no such blocks)."""
    count = 0
    for block in backbone.modules():
        if isinstance(block, MBBlock) and block.residual is not None:
            nn.init.zeros_(block.linear_conv.bn.weight)
            nn.init.zeros_(block.linear_conv.bn.bias)
            count += 1
    return count


@torch.no_grad()
def init_for_training(detector: nn.Module) -> None:
    """Initialise neck and head as upstream does before training, and apply the backbone's post-load rule; call
    it after the backbone weights are in place."""
    zero_init_residual(detector.backbone)
    neck = detector.neck
    _reset_norms(neck)
    if isinstance(neck, CSPNeXtPAFPN):
        _kaiming_convmodules(neck)
    else:
        for module in neck.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                module.reset_parameters()
            if isinstance(getattr(module, "alpha", None), nn.Parameter):
                module.alpha.fill_(1.0)
    head = detector.bbox_head.head_module
    _reset_norms(head)
    if isinstance(head, YOLOv5HeadModule):
        head.reset_classes(head.num_classes)
    elif isinstance(head, YOLOv6HeadModule):
        _kaiming_convmodules(head)
        head.reset_classes(head.num_classes)
        for conv in head.reg_preds:
            conv.weight.fill_(0.0)
            conv.bias.fill_(1.0)
    elif isinstance(head, RTMDetSepBNHeadModule):
        for conv in head.modules():
            if isinstance(conv, nn.Conv2d):
                nn.init.normal_(conv.weight, 0.0, 0.01)
                if conv.bias is not None:
                    nn.init.zeros_(conv.bias)
        for conv in head.rtm_cls:
            conv.bias.fill_(PRIOR_PROB_BIAS)
    else:
        raise TypeError(f"no upstream initialisation known for {type(head).__name__}")
