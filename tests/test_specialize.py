"""``razorzoo specialize`` on fixture supernets (fixture-rule weights of the real supernet state dicts) with a tiny
image folder of scikit-image's photos: constraints hold when re-measured, candidates stay in the search space, a
stopped and resumed search ends where an uninterrupted one does, and the output loads, verifies and pushes.
Budget: about 2 minutes on one core (population 6, 2 generations, 64 px)."""
from __future__ import annotations

import json
import os
import shlex
import shutil
from pathlib import Path

import pytest
import skimage.data
import torch
from safetensors import safe_open

import razorzoo
from helpers.slicing import supernet_state_dict
from hub_server import HubServer
from razorzoo.arch.recipes import CLASSIFIER_PREPROCESS, ClassifierPreprocess
from razorzoo.arch.spec import ArchSpec
from razorzoo.builder import build_model
from razorzoo.cli import main as cli_main
from razorzoo.detection.transforms import ClassifierTransform
from razorzoo.errors import CheckpointError, DatasetError, ImageError, RazorzooError
from razorzoo.search.evolution import ChoiceSpace
from razorzoo.search.latency import DeviceProfile, threads_limit
from razorzoo.search.specialize import Constraint, search_preprocess, specialize

RESOLUTION = 64
SEARCH = dict(population=6, generations=2, seed=0, resolution=RESOLUTION)
# OFA at 64 px (count_flops): the smallest subnet 7.561 MFLOPs, the largest 52.5 M, random ones 15-27 M
OFA_FLOPS = "22M"


def write_supernet(family: str, path: Path) -> Path:
    """An MMRazor supernet checkpoint (``architecture.`` keys) with the real supernet's keys and shapes."""
    torch.save({"state_dict": dict(supernet_state_dict(family, "architecture.")), "meta": {}}, path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("specialize")
    photos = Path(skimage.data.__file__).parent
    layout = {"calib": ["astronaut.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "chelsea.png"],
              "val/281_tabby": ["chelsea.png"], "val/967_espresso": ["coffee.png"],
              "val/812": ["rocket.jpg", "astronaut.png"]}
    for folder, names in layout.items():
        (root / folder).mkdir(parents=True)
        for name in names:
            shutil.copy(photos / name, root / folder / name)
    return {"root": root, "calib": root / "calib", "val": root / "val",
            "ofa": write_supernet("ofa", root / "ofa_supernet.pth")}


@pytest.fixture(scope="module")
def searched(files):
    """One uninterrupted OFA search under a FLOPs budget; ``result.summary["progress"]`` holds its progress lines."""
    out = files["root"] / "uninterrupted"
    lines: list[str] = []
    result = specialize("ofa_supernet", Constraint.parse("flops", OFA_FLOPS), calib=files["calib"], val=files["val"],
                        out=out, weights=files["ofa"], progress=lines.append, **SEARCH)
    result.summary["progress"] = lines
    return result


def _build(subnet) -> torch.nn.Module:
    return build_model(ArchSpec("classification", subnet))


def candidates(out: Path) -> list[dict]:
    return json.loads((out / "pareto.json").read_text())["candidates"]


def test_every_candidate_is_in_the_space_and_feasible_ones_meet_the_budget(searched):
    rows = candidates(searched.out)
    assert len(rows) >= 6
    # on the front: no other candidate has at most its FLOPs and at least its top-1, better in one of them
    for row in rows:
        dominated = any(o["flops"] <= row["flops"] and o["top1"] >= row["top1"]
                        and (o["flops"] < row["flops"] or o["top1"] > row["top1"]) for o in rows)
        assert row["pareto"] is not dominated, row
    assert sum(r["pareto"] for r in rows) >= 1
    limit = Constraint.parse("flops", OFA_FLOPS).limit
    for row in rows:
        values = {"backbone." + k: v for k, v in row["subnet"].items()}
        values.update({k + "_se": v for k, v in values.items() if k.endswith("expand_ratio")})
        razorzoo.load_subnet(values, family="ofa")  # raises if outside the search space
        assert row["feasible"] and row["flops"] <= limit  # every scored candidate passed the constraint
    subnet = razorzoo.load_subnet(searched.out / "subnet.yaml", family="ofa")
    model = razorzoo.build_classifier(searched.out / "subnet.yaml")
    report = razorzoo.count_flops(model, (1, 3, RESOLUTION, RESOLUTION))
    assert report.flops == searched.flops <= limit
    assert report.params == searched.params
    assert subnet == searched.subnet
    assert (searched.out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    best = max(rows, key=lambda r: (r["top1"], -r["loss"]))
    assert best["subnet"] == ChoiceSpace.for_family("ofa").to_json(_genome(subnet))


def _genome(subnet) -> tuple:
    """The searched choices of an OFA subnet, in ChoiceSpace key order."""
    space = ChoiceSpace.for_family("ofa")
    values = {k.removeprefix("backbone."): v for k, v in subnet.to_dict().items()}
    return tuple(values[k] for k in space.keys)


def test_stopped_and_resumed_search_ends_where_the_uninterrupted_one_does(files, searched):
    out = files["root"] / "resumed"
    stopped = specialize("ofa_supernet", Constraint.parse("flops", OFA_FLOPS), calib=files["calib"], val=files["val"],
                         out=out, weights=files["ofa"], stop_after=1, **SEARCH)
    assert stopped is None and not (out / "subnet.yaml").exists()
    assert json.loads((out / "search_state.json").read_text())["generation"] == 1
    code = cli_main(["specialize", "ofa_supernet", "--flops", OFA_FLOPS, "--calib", str(files["calib"]), "--val",
                     str(files["val"]), "-o", str(out), "--weights", str(files["ofa"]), "--population", "6",
                     "--generations", "2", "--resolution", str(RESOLUTION), "--resume", "--quiet"])
    assert code == 0
    assert (out / "subnet.yaml").read_text() == (searched.out / "subnet.yaml").read_text()
    strip = lambda rows: [{k: v for k, v in r.items() if k != "measured_latency"} for r in rows]  # noqa: E731
    assert strip(candidates(out)) == strip(candidates(searched.out))
    with safe_open(str(out / "model.safetensors"), "pt") as a, \
            safe_open(str(searched.out / "model.safetensors"), "pt") as b:
        assert sorted(a.keys()) == sorted(b.keys())
        assert all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in a.keys())


def test_another_seed_searches_other_candidates(files, searched):
    out = files["root"] / "seed1"
    specialize("ofa_supernet", Constraint.parse("flops", OFA_FLOPS), calib=files["calib"], val=files["val"],
               out=out, weights=files["ofa"], stop_after=1, **{**SEARCH, "seed": 1})
    state = json.loads((out / "search_state.json").read_text())
    first = json.loads((searched.out / "search_state.json").read_text())
    assert [s["subnet"] for s in state["scores"]] != [s["subnet"] for s in first["scores"]][:len(state["scores"])]


def test_output_loads_verifies_and_holds_the_calibrated_weights(files, searched):
    weights = searched.out / "model.safetensors"
    model = razorzoo.load_classifier(weights)
    spec = ArchSpec("classification", razorzoo.load_subnet(searched.out / "subnet.yaml"))
    assert razorzoo.verify_pair(spec, weights).ok
    # the same subnet sliced from the supernet and calibrated here on the same images
    from razorzoo.weights.checkpoint import read_checkpoint

    supernet = read_checkpoint(files["ofa"]).state_dict
    expected = razorzoo.build_classifier(searched.out / "subnet.yaml")
    expected.load_state_dict(razorzoo.extract_subnet(supernet, searched.subnet))
    ofa_at_64 = ClassifierTransform(ClassifierPreprocess(resize=73, crop=64, backend="pillow"))  # 64 / 0.875 = 73.1
    # with the search's intra-op threads (1): BN statistics summed in another order drift ~1e-3 on these logits
    with threads_limit(searched.summary["latency"]["threads"]):
        razorzoo.calibrate_bn(expected, ofa_at_64(sorted(files["calib"].iterdir())).split(32))
    x = torch.randn(2, 3, RESOLUTION, RESOLUTION, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected(x), rtol=0, atol=1e-5)
        sliced = razorzoo.build_classifier(searched.out / "subnet.yaml")
        sliced.load_state_dict(razorzoo.extract_subnet(supernet, searched.subnet))
        assert not torch.allclose(sliced.eval()(x), model(x), atol=1e-3)  # calibration changed the model
    with safe_open(str(weights), "pt") as f:
        metadata = f.metadata()
    calibration = json.loads(metadata["razorzoo_calibration"])
    assert calibration["images"] == 5 and calibration["source"] == "calib"
    assert json.loads(metadata["razorzoo_specialize"])["constraint"] == "flops<=22M"
    # the YAML builds the OFA detector recipe too, whose backbone takes the calibrated weights
    detector = razorzoo.build_detector(searched.out / "subnet.yaml", detector="rtmdet_tiny-ofa_lat31")
    backbone = {k.removeprefix("backbone."): v for k, v in model.state_dict().items() if k.startswith("backbone.")}
    detector.backbone.load_state_dict(backbone, strict=True)
    card = (searched.out / "README.md").read_text()
    assert "ofa_supernet" in card and "flops<=22M" in card and "5 images" in card and "razorzoo push" in card


def test_output_pushes_to_the_hub_as_is(searched, monkeypatch, tmp_path):
    """The publish command written in the card, run as the card says (from the output's parent directory)."""
    out = searched.out
    command = next(line for line in (out / "README.md").read_text().splitlines() if line.startswith("razorzoo push"))
    args = shlex.split(command.replace("ORG/NAME", "alice/ofa-specialized"))[1:]
    with HubServer() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_TOKEN", "hf_alice")
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("RAZORZOO_OFFLINE", raising=False)
        monkeypatch.chdir(out.parent)
        assert cli_main(args) == 0
        assert "subnet.yaml" in server.repos["alice/ofa-specialized"].commits[-1].files
        hub_model = razorzoo.load_classifier("hf-hub:alice/ofa-specialized")
    local = razorzoo.load_classifier(out / "model.safetensors")
    x = torch.randn(1, 3, RESOLUTION, RESOLUTION, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(hub_model(x), local(x), rtol=0, atol=1e-5)


def test_latency_budget_holds_on_the_device_profile(files):
    space = ChoiceSpace.for_family("ofa")
    profile = DeviceProfile(repeats=5)
    smallest = profile.predict(_build(space.subnet(space.smallest())), (1, 3, RESOLUTION, RESOLUTION))
    profile.save(files["root"] / "profile.json")
    limit = 1.5 * smallest
    out = files["root"] / "latency"
    result = specialize("ofa_supernet", Constraint("latency", limit), calib=files["calib"], val=files["val"],
                        out=out, weights=files["ofa"], profile=files["root"] / "profile.json",
                        **{**SEARCH, "generations": 1})
    saved = DeviceProfile.load(files["root"] / "profile.json")
    assert saved.backend == "torch" and saved.threads == 1 and len(saved.entries) > len(profile.entries)
    for row in candidates(out):
        model = _build(space.subnet(space.from_json(row["subnet"])))
        predicted = saved.predict(model, (1, 3, RESOLUTION, RESOLUTION), measure=False)  # every entry is saved
        assert predicted == pytest.approx(row["latency"], rel=1e-9) and predicted <= limit
    assert result.predicted_latency_ms <= limit and result.latency_ms > 0
    assert any(r["measured_latency"] for r in candidates(out))  # finalists re-timed end to end


def test_unreachable_budget_names_the_smallest_achievable(files, capsys):
    code = cli_main(["specialize", "ofa_supernet", "--flops", "1M", "--calib", str(files["calib"]), "--val",
                     str(files["val"]), "-o", str(files["root"] / "never"), "--weights", str(files["ofa"]),
                     "--resolution", str(RESOLUTION)])
    err = capsys.readouterr().err
    assert code == 2 and "razorzoo: error: no ofa subnet meets flops<=1M" in err and "smallest needs 7.561M" in err
    assert "Traceback" not in err and not (files["root"] / "never").exists()


def test_search_pipeline_is_the_supernets_upstream_one_at_the_search_resolution():
    # AttentiveNAS and OFA configs resize with Pillow, bilinear; the short side keeps the 256/224 proportion
    assert search_preprocess("ofa", 64) == ClassifierPreprocess(resize=73, crop=64, backend="pillow")
    assert search_preprocess("attentive", 192) == ClassifierPreprocess(resize=219, crop=192, backend="pillow")
    for family in ("attentive", "ofa"):  # at 224: exactly the classifiers' own pipeline
        assert search_preprocess(family, 224) == CLASSIFIER_PREPROCESS[family] == ClassifierPreprocess(
            resize=256, crop=224, backend="pillow")


@pytest.mark.parametrize("metric, text, limit", [
    ("flops", "300M", 300e6), ("flops", "1.5G", 1.5e9), ("flops", "250000", 250000.0), ("params", "5m", 5e6),
    ("params", "800K", 8e5), ("latency", "12ms", 12.0), ("latency", "0.5s", 500.0), ("latency", "7", 7.0),
])
def test_budgets_parse_with_their_units(metric, text, limit):
    assert Constraint.parse(metric, text).limit == pytest.approx(limit)


@pytest.mark.parametrize("metric, text", [("flops", "12ms"), ("latency", "5M"), ("params", "-3M"), ("flops", "")])
def test_budgets_in_the_wrong_unit_are_refused(metric, text):
    with pytest.raises(RazorzooError, match=f"is not a {metric} budget"):
        Constraint.parse(metric, text)


def test_bad_inputs_are_clear_errors(files, tmp_path):
    constraint = Constraint.parse("flops", OFA_FLOPS)
    kwargs = dict(out=tmp_path / "out", **SEARCH)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match="holds no images"):
        specialize("ofa_supernet", constraint, calib=tmp_path / "empty", val=files["val"], weights=files["ofa"],
                   **kwargs)
    (tmp_path / "badval" / "cats").mkdir(parents=True)
    with pytest.raises(DatasetError, match="must be named by its ImageNet class index"):
        specialize("ofa_supernet", constraint, calib=files["calib"], val=tmp_path / "badval", weights=files["ofa"],
                   **kwargs)
    not_a_supernet = tmp_path / "ofa_lat22.pth"
    subnet_model = razorzoo.build_classifier("ofa_lat22")
    torch.save({"state_dict": subnet_model.state_dict()}, not_a_supernet)
    with pytest.raises(CheckpointError, match="is not the ofa_supernet checkpoint"):
        specialize("ofa_supernet", constraint, calib=files["calib"], val=files["val"], weights=not_a_supernet,
                   **kwargs)
    with pytest.raises(CheckpointError):
        (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
        specialize("ofa_supernet", constraint, calib=files["calib"], val=files["val"], weights=tmp_path / "junk.pth",
                   **kwargs)
    with pytest.raises(RazorzooError, match="not a supernet to search"):
        specialize("ofa_lat22", constraint, calib=files["calib"], val=files["val"], weights=files["ofa"], **kwargs)
    other_threads = DeviceProfile(threads=2).save(tmp_path / "two_threads.json")
    with pytest.raises(RazorzooError, match="was measured with torch and 2 threads, not torch and 1"):
        specialize("ofa_supernet", Constraint.parse("latency", "50ms"), calib=files["calib"], val=files["val"],
                   weights=files["ofa"], profile=other_threads, **kwargs)
    (tmp_path / "not_a_profile.json").write_text('{"entries": {}}')
    with pytest.raises(RazorzooError, match="is not a razorzoo device profile"):
        DeviceProfile.load(tmp_path / "not_a_profile.json")
    with pytest.raises(RazorzooError, match="write e.g. 300M"):
        Constraint.parse("flops", "lots")
    assert not (tmp_path / "out").exists()


def test_params_budget_on_the_attentive_supernet(files):
    """The other search space and the other exact budget (AttentiveNAS params: the smallest subnet 9.06 M, random
    ones 13.7-19.2 M)."""
    supernet = write_supernet("attentive", files["root"] / "attentive_supernet.pth")
    out = files["root"] / "attentive"
    result = specialize("attentive_supernet", Constraint.parse("params", "15M"), calib=files["calib"],
                        val=files["val"], out=out, weights=supernet, **{**SEARCH, "population": 4, "generations": 1})
    model = razorzoo.load_classifier(out / "model.safetensors")
    assert razorzoo.load_subnet(out / "subnet.yaml", family="attentive") == result.subnet
    assert razorzoo.count_flops(model, (1, 3, RESOLUTION, RESOLUTION)).params == result.params <= 15e6
    assert all(row["params"] <= 15e6 for row in candidates(out))


# -- what the search says and writes -----------------------------------------------------------------------------
_NUMBER = r"\d+(?:\.\d+)?"


def test_progress_lines_say_what_their_numbers_are(searched):
    import re

    lines = searched.summary["progress"]
    assert re.fullmatch(rf"reading 5 calibration images and 4 validation images at {RESOLUTION}px", lines[0])
    assert re.fullmatch(r"generation 1/2: 6 random candidates meeting the constraint, from \d+ samples", lines[1])
    candidate = re.compile(rf"generation ([12])/2, candidate ([1-6])/6: top-1 {_NUMBER}% on your validation images "
                           rf"\(loss {_NUMBER}\), flops {_NUMBER}M")
    assert sum(bool(candidate.fullmatch(line)) for line in lines) >= 7  # every candidate of both generations
    assert any(re.fullmatch(rf"generation 2/2 done, best so far: top-1 {_NUMBER}% on your validation images "
                            rf"\(loss {_NUMBER}\), flops {_NUMBER}M", line) for line in lines)
    assert any(re.fullmatch(rf"finalist 1/\d: top-1 .*; measured {_NUMBER} ms end to end", line) for line in lines)
    assert not any("score" in line for line in lines)  # no bare score tuples


def test_the_budget_is_rechecked_on_the_written_network_and_the_card_says_so(searched):
    budget = json.loads((searched.out / "specialize.json").read_text())["budget"]
    model = razorzoo.build_classifier(searched.out / "subnet.yaml")
    counted = razorzoo.count_flops(model, (1, 3, RESOLUTION, RESOLUTION)).flops
    assert budget == {"constraint": "flops<=22M", "metric": "flops", "limit": 22e6, "measured": counted,
                      "measured_by": "counted on the whole network", "met": True}
    card = (searched.out / "README.md").read_text()
    assert f"| budget `flops<=22M` | met: {counted / 1e6:.4g}M counted on the whole network |" in card
    assert "population 6, 2 generations," in card and "of 4 images |" in card


def test_the_pareto_plot_and_json_mark_the_chosen_subnet(searched):
    from PIL import Image

    rows = candidates(searched.out)
    chosen = [row for row in rows if row["chosen"]]
    assert len(chosen) == 1 and chosen[0]["subnet"] == ChoiceSpace.for_family("ofa").to_json(_genome(searched.subnet))
    import numpy as np

    pixels = np.asarray(Image.open(searched.out / "pareto.png").convert("RGB")).astype(int)
    star = np.array([0x2C, 0xA0, 0x2C])  # the chosen point's green; evaluated points are grey, the front red, the
    assert (np.abs(pixels - star).max(axis=-1) <= 8).sum() > 20  # budget line blue: only the star is green


def test_a_latency_budget_missed_end_to_end_is_said_not_hidden(files, tmp_path, capsys):
    """A device profile that predicts 1% of the real block times: the search's candidates fit the budget on the
    table, none when timed end to end. The output is written, and its card, summary and the command say the budget
    is missed, by how much, measured how. (A first search with no real budget measures the candidates' blocks; the
    same seed then samples the same candidates.)"""
    def search(out: Path, budget: str, profile: Path) -> tuple[int, str]:
        code = cli_main(["specialize", "ofa_supernet", "--latency", budget, "--calib", str(files["calib"]), "--val",
                         str(files["val"]), "-o", str(out), "--weights", str(files["ofa"]), "--population", "3",
                         "--generations", "1", "--resolution", str(RESOLUTION), "--profile", str(profile), "--quiet"])
        return code, capsys.readouterr().err

    measured = tmp_path / "measured.json"
    assert search(tmp_path / "unbounded", "100000ms", measured)[0] == 0
    profile = DeviceProfile.load(measured)
    profile.entries = {key: value / 100 for key, value in profile.entries.items()}
    profile.save(tmp_path / "optimistic.json")
    limit = max(row["latency"] for row in candidates(tmp_path / "unbounded")) / 100 * 1.05
    out = tmp_path / "missed"
    code, err = search(out, f"{limit:.6f}ms", tmp_path / "optimistic.json")
    assert code == 0
    budget = json.loads((out / "specialize.json").read_text())["budget"]
    assert budget["met"] is False and budget["measured"] > budget["limit"] == pytest.approx(limit, rel=1e-5)
    assert budget["measured_by"] == f"timed end to end ({RESOLUTION}px, batch 1)"
    card = (out / "README.md").read_text()
    assert "| budget `latency<=" in card and "**missed**" in card and "1 generation," in card
    assert "razorzoo: warning: the budget latency<=" in err and "is missed" in err


def test_a_missing_plot_extra_fails_before_the_search(files, tmp_path):
    import subprocess
    import sys

    code = ("import sys; sys.modules['matplotlib'] = None\n"  # as if the search extra were not installed
            "from razorzoo.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-c", code, "specialize", "ofa_supernet", "--flops", OFA_FLOPS, "--calib",
                          str(files["calib"]), "--val", str(files["val"]), "-o", str(out), "--weights",
                          str(tmp_path / "never-read.pth")], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(Path(razorzoo.__file__).parent.parent)})
    assert run.returncode == 2
    assert "matplotlib, which is not installed: pip install 'razorzoo[search]'" in run.stderr
    assert not out.exists()  # nothing read (the weights path does not exist), nothing searched, nothing written


def _random_subnets(family: str, n: int, seed: int):
    import random

    space, rng = ChoiceSpace.for_family(family), random.Random(seed)
    return [space.subnet(space.sample(rng)) for _ in range(n)] + [space.subnet(space.smallest())]


@pytest.mark.parametrize("family, resolution", [("ofa", 64), ("attentive", 64), ("ofa", 224), ("attentive", 192)])
def test_the_cost_table_gives_the_whole_network_counts(family, resolution):
    """FLOPs and params summed from the unit table equal count_flops of the whole classifier, on random subnets,
    the smallest, and the zoo's own subnets (AttentiveNAS ones resize their input to the YAML's input_shape)."""
    from razorzoo.search.costs import CostTable

    table = CostTable()
    subnets = _random_subnets(family, 12 if resolution == 64 else 4, seed=resolution)
    subnets += [razorzoo.load_subnet(card.subnet_path) for card in map(razorzoo.get_card, razorzoo.list_models())
                if card.family == family and card.task == "classification"]
    for subnet in subnets:
        with torch.device("meta"):
            model = _build(subnet)
        report = razorzoo.count_flops(model, (1, 3, resolution, resolution))
        costs = table.costs(subnet, resolution)
        assert (costs.flops, costs.params) == (report.flops, report.params), subnet
    counted = table.counted
    assert counted == len(table.entries) > 0  # each distinct unit was built and counted once
    for subnet in subnets:  # the second time everything comes from the table: nothing is built or run
        table.costs(subnet, resolution)
    assert table.counted == counted


def test_a_cost_table_refuses_a_subnet_that_is_not_a_mobilenet():
    from razorzoo.search.costs import CostTable

    with pytest.raises(RazorzooError, match=r"^cost tables cover AttentiveNAS and OFA subnets \(MobileNet blocks\), "
                                            r"not SposSubnet$"):
        CostTable().costs(razorzoo.load_subnet(razorzoo.get_card("spos_0.33M").subnet_path), 224)


# -- the numbers behind the written subnet: top-1, the finalists, the budget's verdict -----------------------------
def _evaluator(files, labels: list[int] | None = None):
    from razorzoo.search.specialize import _Evaluator

    transform = ClassifierTransform(search_preprocess("ofa", RESOLUTION))
    photos = sorted(files["calib"].iterdir())
    return _Evaluator(ChoiceSpace.for_family("ofa"), supernet_state_dict("ofa"), transform(photos), transform(photos[:4]),
                      torch.tensor(labels or [0, 0, 0, 0]), RESOLUTION, None, 32)


def test_top1_is_the_percentage_of_validation_images_whose_label_is_the_first_class(files):
    """Labels set to what the calibrated candidate predicts, all but one: its top-1 is 75%, and its loss is the
    mean cross-entropy of its logits (the fixture supernet scores 0% on the real labels, which pins no scale)."""
    probe = _evaluator(files)
    genome = probe.space.smallest()
    with torch.no_grad():
        logits = probe.calibrated_model(genome)(probe.val)
    labels = logits.argmax(1).tolist()
    labels[2] = (labels[2] + 1) % 1000
    evaluator = _evaluator(files, labels)
    top1, minus_loss = evaluator.score(genome)
    loss = torch.nn.functional.cross_entropy(logits.double(), torch.tensor(labels)).item()
    assert top1 == 75.0 and minus_loss == pytest.approx(-loss, rel=1e-6)
    assert evaluator.results[genome]["top1"] == 75.0 and evaluator.results[genome]["loss"] == -minus_loss


def test_finalists_are_the_best_and_the_most_accurate_feasible_front_rows_best_first():
    import random

    from razorzoo.search.specialize import FINALISTS, _finalists

    space, rng = ChoiceSpace.for_family("ofa"), random.Random(0)
    genomes = list({space.sample(rng) for _ in range(8)})[:6]
    top1 = dict(zip(genomes, [70.0, 60.0, 50.0, 40.0, 30.0, 80.0]))
    ranked = lambda g: (top1[g], 0.0)  # noqa: E731
    front = [{"subnet": space.to_json(g), "feasible": g != genomes[5]} for g in genomes[1:]]  # [5]: over budget
    assert FINALISTS == 3
    # the best (not on the front here) first, then the most accurate feasible rows; the 80% row is over budget
    assert _finalists(front, genomes[0], space, ranked) == [genomes[0], genomes[1], genomes[2]]
    assert _finalists(front[2:], genomes[0], space, ranked) == [genomes[0], genomes[3], genomes[4]]
    assert _finalists([], genomes[4], space, ranked) == [genomes[4]]


def test_a_latency_budget_picks_the_most_accurate_finalist_timed_within_it(files):
    import random

    from razorzoo.search.specialize import _choose

    evaluator = _evaluator(files)
    rng = random.Random(1)
    a, b, c = evaluator.space.sample(rng), evaluator.space.sample(rng), evaluator.space.smallest()
    assert len({a, b, c}) == 3
    ranked = {a: (3,), b: (2,), c: (1,)}.get
    budget = Constraint("latency", 10.0)
    # a is the most accurate but over budget end to end; b is exactly at the budget, which meets it; c is within
    chosen, verdict = _choose([a, b, c], a, {a: 12.0, b: 10.0, c: 4.0}, evaluator, budget, ranked)
    assert chosen == b and verdict == {"constraint": "latency<=10ms", "metric": "latency", "limit": 10.0,
                                       "measured": 10.0, "measured_by": f"timed end to end ({RESOLUTION}px, batch 1)",
                                       "met": True}
    chosen, verdict = _choose([c, b, a], a, {a: 9.0, b: 8.0, c: 4.0}, evaluator, budget, ranked)  # any order in
    assert chosen == a and verdict["measured"] == 9.0 and verdict["met"] is True
    chosen, verdict = _choose([a, b], a, {a: 12.0, b: 10.5}, evaluator, budget, ranked)  # none within: the best
    assert chosen == a and verdict["measured"] == 12.0 and verdict["met"] is False


def test_a_flops_budget_equal_to_the_written_networks_count_is_met(files):
    from razorzoo.search.specialize import _choose

    evaluator = _evaluator(files)
    genome = evaluator.space.smallest()
    with torch.device("meta"):
        flops = razorzoo.count_flops(_build(evaluator.space.subnet(genome)), (1, 3, RESOLUTION, RESOLUTION)).flops
    for limit, met in ((flops, True), (flops - 1, False)):
        chosen, verdict = _choose([genome], genome, {genome: 1.0}, evaluator, Constraint("flops", limit), None)
        assert chosen == genome and verdict["measured"] == flops and verdict["met"] is met
