"""A missing optional package is named, with the extra that installs it, before any work starts (a download, a
conversion, an upload), in the commands not covered by their own modules' tests (deploy: tests/test_deploy.py,
specialize: tests/test_specialize.py)."""
import os
import subprocess
import sys
from pathlib import Path

import razorzoo

ROOT = str(Path(razorzoo.__file__).parent.parent)


def _cli_without(module: str, argv: list[str], **env: str) -> subprocess.CompletedProcess:
    code = (f"import sys; sys.modules[{module!r}] = None\n"  # as if the package were not installed
            "from razorzoo.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": ROOT, **env})


def test_val_on_coco_names_the_coco_extra_before_downloading(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "ann.json").write_text('{"images": [], "annotations": [], "categories": []}')
    cache = tmp_path / "cache"
    run = _cli_without("pycocotools", ["val", "yolov5s-spos_0.33M", "--coco-ann", str(tmp_path / "ann.json"),
                                       "--images", str(tmp_path / "images")],
                       RAZORZOO_CACHE=str(cache), RAZORZOO_OFFLINE="1")  # a download would fail differently
    assert run.returncode == 2
    assert run.stderr == "razorzoo: error: COCO evaluation needs pycocotools: pip install 'razorzoo[coco]'\n"
    assert not cache.exists()


def test_push_with_onnx_names_the_onnx_extra_before_any_request(tmp_path):
    run = _cli_without("onnxscript", ["push", "me/model", "--subnet", "SPOS_SUBNET.yaml", "--weights",
                                      str(tmp_path / "never-read.pth"), "--base", "spos_0.33M", "--onnx"],
                       HF_TOKEN="hf_test", HF_ENDPOINT="http://127.0.0.1:9")  # port 9: nothing answers there
    assert run.returncode == 2, run.stderr
    assert "exporting to ONNX needs onnxscript, which is not installed: pip install 'razorzoo[onnx]'" in run.stderr
