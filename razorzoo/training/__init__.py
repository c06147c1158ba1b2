"""Training detectors on COCO-format data with their MMYOLO recipes (docs/train.md).

The data half: :mod:`razorzoo.training.dataset` (the annotation file parsed and checked like mmdet's
``CocoDataset``), :mod:`razorzoo.training.transforms` (each recipe's train transforms, reproduced from upstream) and
:mod:`razorzoo.training.pipeline` (stage choice, per-sample random generators, sharding, worker processes, batches).
"""
