"""``razorzoo.calibrate_bn``: after calibration every BatchNorm holds the exact mean and unbiased variance of the
inputs it saw, computed here independently from forward hooks in float64. Budget: a few seconds."""
from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import pytest
import skimage.data
import torch
from torch.nn.modules.batchnorm import _BatchNorm

import razorzoo
from fixture_rule import rule_tensor
from razorzoo.arch.recipes import ClassifierPreprocess
from razorzoo.errors import ImageError
from razorzoo.models.classifier import build_classifier_from_subnet

SUBNET = Path(__file__).parent.parent / "cards" / "subnets" / "OFA_SUBNET_NOTE8_LAT22.yaml"


def rule_model(preprocessing: ClassifierPreprocess | None = None) -> torch.nn.Module:
    """OFA lat22 with fixture-rule weights (so every layer computes something), no input resize."""
    model = build_classifier_from_subnet(razorzoo.load_subnet(SUBNET), preprocessing=preprocessing)
    model.load_state_dict({k: rule_tensor(k, v.shape, str(v.dtype)) for k, v in model.state_dict().items()})
    model.input_shape = None
    return model


def batches(*sizes: int, size: int = 48) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    return [torch.randn(n, 3, size, size, generator=g) for n in sizes]


def capture_bn_inputs(model: torch.nn.Module) -> tuple[dict, list]:
    """Hooks recording every input of every BN (float64), by BN name; returns (inputs, hook handles)."""
    inputs: dict[str, list[torch.Tensor]] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, _BatchNorm):
            def hook(m, args, output, name=name):
                inputs.setdefault(name, []).append(args[0].detach().double().clone())
            handles.append(module.register_forward_hook(hook))
    return inputs, handles


def test_running_stats_are_the_exact_moments_of_the_bn_inputs():
    model = rule_model()
    inputs, handles = capture_bn_inputs(model)
    data = batches(3, 2, 4)  # uneven batches: averaging per-batch variances (upstream) would not be exact
    razorzoo.calibrate_bn(model, data)
    for h in handles:
        h.remove()
    norms = dict(model.named_modules())
    assert len(inputs) == sum(isinstance(m, _BatchNorm) for m in norms.values()) > 20
    for name, seen in inputs.items():
        assert len(seen) == 3
        flat = torch.cat(seen).transpose(0, 1).flatten(1)  # C x (all images * H * W)
        bn = norms[name]
        torch.testing.assert_close(bn.running_mean.double(), flat.mean(1), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(bn.running_var.double(), flat.var(1, unbiased=True), rtol=1e-5, atol=1e-6)
        assert bn.running_var.dtype == torch.float32


def test_while_calibrating_bns_normalise_with_batch_statistics():
    model = rule_model()
    pairs, handles = [], []
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            handles.append(module.register_forward_hook(
                lambda m, args, out: pairs.append((m, args[0].detach().clone(), out.detach().clone()))))
    razorzoo.calibrate_bn(model, batches(3, 2))
    for h in handles:
        h.remove()
    assert pairs
    for m, x, out in pairs:
        mean = x.mean((0, 2, 3))
        var = x.var((0, 2, 3), unbiased=False)
        expected = (x - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + m.eps)
        expected = expected * m.weight[None, :, None, None] + m.bias[None, :, None, None]
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


def test_result_is_deterministic_in_eval_mode_and_changes_the_outputs():
    x = batches(2, size=40)[0]
    before = rule_model()
    with torch.no_grad():
        uncalibrated = before.eval()(x)
    first = razorzoo.calibrate_bn(rule_model().train(), batches(3, 2))
    second = razorzoo.calibrate_bn(rule_model(), batches(3, 2))
    assert not first.training and not any(m.training for m in first.modules())
    for (k, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), k
    assert all(int(m.num_batches_tracked) == 0 for m in first.modules() if isinstance(m, _BatchNorm))
    with torch.no_grad():
        calibrated = first(x)
    assert not torch.allclose(calibrated, uncalibrated)


def test_n_limits_the_number_of_images():
    data = batches(3, 3)
    limited = razorzoo.calibrate_bn(rule_model(), data, n=4)
    explicit = razorzoo.calibrate_bn(rule_model(), [data[0], data[1][:1]])
    for (k, a), b in zip(limited.state_dict().items(), explicit.state_dict().values()):
        assert torch.equal(a, b), k


def test_an_empty_batch_adds_nothing():
    data = batches(3, 2)
    with_empty = razorzoo.calibrate_bn(rule_model(), [data[0], data[0][:0], data[1]])
    without = razorzoo.calibrate_bn(rule_model(), data)
    for (k, a), b in zip(with_empty.state_dict().items(), without.state_dict().values()):
        assert torch.equal(a, b), k


def test_moments_are_accumulated_in_float64():
    """Inputs far from zero with a small spread (1e4 + 0.01 noise): float32 deviations from a float32 mean would
    be off by about a percent; the running variance matches float64 arithmetic on the same float32 inputs."""
    x = 1e4 + 0.01 * torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    bn = razorzoo.calibrate_bn(torch.nn.Sequential(torch.nn.BatchNorm2d(3)), [x[:1], x[1:]])[0]
    flat = x.double().transpose(0, 1).flatten(1)
    torch.testing.assert_close(bn.running_mean.double(), flat.mean(1), rtol=1e-7, atol=0)
    torch.testing.assert_close(bn.running_var.double(), flat.var(1), rtol=1e-6, atol=0)


def test_a_batchnorm_without_running_statistics_is_left_alone():
    model = torch.nn.Sequential(torch.nn.BatchNorm2d(3), torch.nn.BatchNorm2d(3, track_running_stats=False))
    x = batches(4)[0]
    razorzoo.calibrate_bn(model, [x])
    assert model[1].running_mean is None and model[1].running_var is None
    torch.testing.assert_close(model[0].running_var.double(), x.double().transpose(0, 1).flatten(1).var(1))


def test_n_limits_the_images_of_a_folder_and_the_progress_total(photo_folder, capsys):
    model = rule_model(ClassifierPreprocess(resize=73, crop=64))
    first_two = sorted(photo_folder.rglob("*.png"))[:2]
    limited = razorzoo.calibrate_bn(model, photo_folder, n=2, batch_size=2)
    explicit = razorzoo.calibrate_bn(rule_model(ClassifierPreprocess(resize=73, crop=64)), first_two, batch_size=2)
    for (k, a), b in zip(limited.state_dict().items(), explicit.state_dict().values()):
        assert torch.equal(a, b), k
    capsys.readouterr()
    razorzoo.calibrate_bn(rule_model(), batches(3, 3), n=4, progress=True)
    assert "4/4 [" in capsys.readouterr().err  # ready batches cut to n: n images in all


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("calib")
    for i, name in enumerate(("astronaut.png", "coffee.png", "chelsea.png")):
        (root / f"class{i % 2}").mkdir(exist_ok=True)
        shutil.copy(Path(skimage.data.__file__).parent / name, root / f"class{i % 2}" / name)
    return root


def test_image_folder_goes_through_the_models_own_preprocessing(photo_folder):
    model = rule_model(ClassifierPreprocess(resize=73, crop=64, backend="pillow"))  # OFA's pipeline, at 64 px
    inputs, handles = capture_bn_inputs(model)
    given = []
    handles.append(model.register_forward_pre_hook(lambda m, args: given.append(args[0].clone())))
    razorzoo.calibrate_bn(model, photo_folder, batch_size=2)
    for h in handles:
        h.remove()
    photos = sorted(photo_folder.rglob("*.png"))  # class0/astronaut, class0/chelsea, class1/coffee
    assert [p.name for p in photos] == ["astronaut.png", "chelsea.png", "coffee.png"]
    assert [x.shape for x in given] == [(2, 3, 64, 64), (1, 3, 64, 64)]
    assert torch.equal(torch.cat(given), model.preprocess(photos))
    first = inputs["backbone.first_conv.bn"]
    assert [t.shape for t in first] == [(2, 16, 32, 32), (1, 16, 32, 32)]  # 3 photos, stride-2 stem
    flat = torch.cat(first).transpose(0, 1).flatten(1)
    torch.testing.assert_close(model.backbone.first_conv.bn.running_var.double(), flat.var(1), rtol=1e-5, atol=1e-6)


def test_calibration_shows_its_progress_in_images(photo_folder, capsys, monkeypatch):
    """A progress bar counting images (3 photos in batches of 2; ready batches: their images), unless turned off."""
    razorzoo.calibrate_bn(rule_model(ClassifierPreprocess(resize=73, crop=64)), photo_folder, batch_size=2,
                          progress=True)
    err = capsys.readouterr().err
    assert "calibrate_bn: 100%" in err and "3/3 [" in err
    razorzoo.calibrate_bn(rule_model(), batches(3, 2), progress=True)
    err = capsys.readouterr().err
    assert "calibrate_bn: 100%" in err and "5/5 [" in err
    monkeypatch.setenv("RAZORZOO_PROGRESS", "0")
    razorzoo.calibrate_bn(rule_model(), batches(3, 2))
    assert capsys.readouterr().err == ""


def test_images_need_a_model_that_prepares_them(photo_folder):
    with pytest.raises(ImageError, match="has no preprocess"):
        razorzoo.calibrate_bn(rule_model().backbone, photo_folder)


def test_empty_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(ImageError, match="holds no images"):
        razorzoo.calibrate_bn(rule_model(), tmp_path / "empty")
    with pytest.raises(ImageError, match="got no images"):
        razorzoo.calibrate_bn(rule_model(), [])


def test_hostile_images_are_refused_like_everywhere_else(tmp_path):
    """Folder images are decoded by load_image, with its guards: an empty file and a decompression bomb."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.png").write_bytes(b"")
    with pytest.raises(ImageError, match=r"is empty \(0 bytes\)"):
        razorzoo.calibrate_bn(rule_model(), tmp_path / "empty")
    (tmp_path / "bomb").mkdir()
    header = b"IHDR" + struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)  # 30000 x 30000 RGB, 8 bits
    chunks = [struct.pack(">I", len(c) - 4) + c + struct.pack(">I", zlib.crc32(c)) for c in (header, b"IEND")]
    png = b"\x89PNG\r\n\x1a\n" + b"".join(chunks)
    (tmp_path / "bomb" / "b.png").write_bytes(png)
    with pytest.raises(ImageError, match="decompression bomb"):
        razorzoo.calibrate_bn(rule_model(), tmp_path / "bomb")


def test_a_detectors_images_calibrate_on_the_batches_its_preprocess_makes():
    """A detector's ``preprocess`` returns ``(batch, metas)``: the batch is what goes through the network."""
    from helpers import DETECTORS, fixture_model
    from val_data import generated_image

    detector = fixture_model(DETECTORS[0])
    images = [generated_image(96, 64, seed=1), generated_image(64, 96, seed=2)]
    given = []
    handle = detector.register_forward_pre_hook(lambda m, args: given.append(args[0].clone()))
    razorzoo.calibrate_bn(detector, images, batch_size=1)
    handle.remove()
    assert len(given) == 2 and all(isinstance(x, torch.Tensor) for x in given)
    for x, image in zip(given, images, strict=True):
        assert torch.equal(x, detector.preprocess([image])[0])
