"""Pure-PyTorch models whose state-dict keys equal the upstream MMRazor/MMYOLO checkpoint keys.

Submodules are imported where needed (they import torch); see docs/ARCHITECTURE.md for which concept lives where.
"""
