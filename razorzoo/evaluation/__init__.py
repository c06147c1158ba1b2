"""Run models over many inputs: COCO / ImageNet validation under the upstream protocol, and streaming prediction.

Everything here works on any object with the detector API (``recipe``, ``detect`` or a call and ``postprocess``), so an
exported model on another backend is evaluated exactly like the eager one. Importing this package does not import
torch.
"""
