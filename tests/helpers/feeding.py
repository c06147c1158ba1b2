"""What a model is fed during a run: batch sizes and the loader threads alive, seen from a forward pre-hook."""
from __future__ import annotations

import threading

import torch


class FedBatches:
    """Within ``with FedBatches(kind) as fed:``, the batch size of every forward pass of a ``kind`` module
    (``fed.batches``) and the names of the ``razorzoo-load`` threads alive at any of them (``fed.loaders``); a
    global forward pre-hook on the real modules, removed on exit."""

    def __init__(self, kind: type) -> None:
        self.kind = kind
        self.batches: list[int] = []
        self.loaders: set[str] = set()

    def __enter__(self) -> "FedBatches":
        def hook(module, args):
            if isinstance(module, self.kind):
                self.batches.append(args[0].shape[0])
                self.loaders |= {t.name for t in threading.enumerate() if t.name.startswith("razorzoo-load")}

        self._handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()
