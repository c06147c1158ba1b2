"""The image -> boxes pipeline of the detectors: preprocessing (§6.1), decoding and NMS (§6.4), results.

``razorzoo.detection.transforms`` and ``razorzoo.detection.postprocess`` import torch; import them directly.
"""
