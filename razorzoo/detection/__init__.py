"""The image -> boxes pipeline: ``transforms`` (loading, test pipelines, :class:`ImageMeta`), ``coders`` (priors and
box decoding), ``nms``, ``postprocess`` (filter, NMS, rescale) and ``results`` (:class:`Detections`).

Only ``transforms`` is torch-free at import time; import the modules directly (docs/upstream.md §6).
"""
