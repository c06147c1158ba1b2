"""``razorzoo push --onnx`` and ``load_classifier("hf-hub:...", backend=...)`` against the Hub-compatible server of
``tests/hub_server.py`` (real ``huggingface_hub`` client on 127.0.0.1). Budget: one export (~20-60 s)."""
from __future__ import annotations

import pytest
import torch

import razorzoo
from razorzoo.cli import main
from test_hub import CUSTOM_SUBNET, classifier_files, fresh_cache, hub, local_outputs  # noqa: F401 (fixtures)

pytest.importorskip("onnxruntime", reason="needs the onnx extra: pip install -e '.[onnx]'")


def test_push_onnx_adds_the_export_to_the_commit_and_backend_loads_use_it(hub, classifier_files, fresh_cache,
                                                                         tmp_path, monkeypatch, capsys):
    subnet, weights_path, weights = classifier_files
    assert main(["push", "alice/attentive-onnx", "--subnet", str(subnet), "--weights", str(weights_path),
                 "--base", "attentive_a6", "--onnx"]) == 0
    capsys.readouterr()
    files = hub.repos["alice/attentive-onnx"].commits[-1].files
    assert sorted(files) == [".gitattributes", "README.md", "config.json", "model.onnx", "model.safetensors",
                             "subnet.yaml"]
    monkeypatch.setenv("RAZORZOO_CACHE", str(tmp_path / "cache"))
    model = razorzoo.load_classifier("hf-hub:alice/attentive-onnx", backend="onnxruntime")
    assert not (tmp_path / "cache" / "exported").exists()  # the repo's model.onnx, not a local export
    assert model.metadata["razorzoo_task"] == "classification"
    x = torch.randn(2, 3, *model.input_size, generator=torch.Generator().manual_seed(7))
    expected = local_outputs(lambda: razorzoo.build_classifier(CUSTOM_SUBNET), weights, x).view(2, 1000)
    torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-4)
