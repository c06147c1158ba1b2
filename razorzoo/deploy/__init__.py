"""Deploy: export razorzoo models to ONNX and run them on ONNX Runtime or OpenVINO (docs/deploy.md).

``export`` writes a self-describing ``.onnx`` file; ``open_exported`` (and ``load_detector(..., backend=)``) runs
one with the eager models' API; ``check_parity`` is the gate ``export`` runs before writing.
"""
from razorzoo.deploy.export import Exported, export
from razorzoo.deploy.parity import ParityError, ParityReport, check_parity
from razorzoo.deploy.runtime import BACKENDS, ExportedDetector, ExportedModel, open_exported

__all__ = ["export", "Exported", "check_parity", "ParityReport", "ParityError", "open_exported",
           "ExportedModel", "ExportedDetector", "BACKENDS"]
