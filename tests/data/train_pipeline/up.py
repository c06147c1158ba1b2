"""Import upstream transforms from the pip-extracted sources (/tmp/up) with the shared venv's torch/numpy/cv2.

mmcv-lite has no compiled ops: mmcv.ops (only reached through mask structures, unused by box pipelines) is stubbed.
"""
import importlib.abc
import importlib.machinery
import sys
import types


class _StubOps(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name == "mmcv.ops" or name.startswith("mmcv.ops."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []

        def stub(attr):
            if attr.startswith("__"):
                raise AttributeError(attr)
            return lambda *args, **kwargs: (_ for _ in ()).throw(RuntimeError(f"mmcv.ops stub {attr}"))

        module.__getattr__ = stub
        return module

    def exec_module(self, module):
        pass


sys.meta_path.insert(0, _StubOps())
import mmcv  # noqa: E402

mmcv.__version__ = "2.0.1"  # mmdet 3.3 / mmyolo 0.6 refuse mmcv 2.2.0 by its version string only
import mmdet  # noqa: E402

mmdet.__version__ = "3.0.0"
import mmdet.datasets.transforms as D  # noqa: E402,F401
import mmyolo.datasets.transforms as Y  # noqa: E402,F401
