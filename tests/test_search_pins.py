"""The search's promises at their edges: a budget equal to a candidate's cost admits it, a resumed search draws the
random numbers an uninterrupted one does, a state is resumed only by the search that wrote it, ``--calib-images`` is
the number of images calibrated on, a latency table tells input sizes apart, and every ``specialize`` option changes
what it says. Budget: ~1 minute on one core (OFA at 64 px, populations of 2-3, one generation).
"""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import razorzoo
from helpers.slicing import supernet_state_dict
from razorzoo.arch.recipes import ClassifierPreprocess
from razorzoo.cli import main as cli_main
from razorzoo.detection.transforms import ClassifierTransform
from razorzoo.errors import RazorzooError
from razorzoo.search.evolution import ChoiceSpace, EvolutionSearch, SearchSettings
from razorzoo.search.latency import DeviceProfile, block_signatures, threads_limit
from razorzoo.search.specialize import Constraint, specialize
from test_specialize import RESOLUTION, files, write_supernet  # noqa: F401  (files: the module's image folders)

SPACE = ChoiceSpace.for_family("ofa")


def _flops(genome, resolution: int = RESOLUTION) -> int:
    """FLOPs of a genome's classifier counted here, on a real (not meta) model."""
    model = razorzoo.build_classifier(SPACE.subnet(genome).to_yaml())
    return razorzoo.count_flops(model, (1, 3, resolution, resolution)).flops


def _smallest_classifier() -> torch.nn.Module:
    """The OFA space's smallest subnet as a classifier (fresh weights): the latency tables' test network."""
    return razorzoo.build_classifier(SPACE.subnet(SPACE.smallest()).to_yaml())


def _scored(out: Path) -> list[tuple]:
    return [SPACE.from_json(e["subnet"]) for e in json.loads((out / "search_state.json").read_text())["scores"]]


def _search(files, out: Path, constraint: Constraint, **options):
    settings = dict(population=3, generations=1, seed=0, resolution=RESOLUTION) | options
    return specialize("ofa_supernet", constraint, calib=files["calib"], val=files["val"], out=out,
                      weights=files["ofa"], **settings)


def test_a_budget_equal_to_a_candidates_cost_admits_it(files):
    """The same seed under no budget and under a budget exactly equal to the largest first-generation cost: the
    same candidates, the one at the budget marked feasible."""
    free = files["root"] / "budget_free"
    _search(files, free, Constraint.parse("flops", "1G"))
    first = _scored(free)
    costs = [_flops(g) for g in first]
    assert len(first) == 3 and len(set(costs)) == 3
    exact = files["root"] / "budget_exact"
    result = _search(files, exact, Constraint("flops", float(max(costs))))
    assert _scored(exact) == first
    rows = json.loads((exact / "pareto.json").read_text())["candidates"]
    assert sorted(r["flops"] for r in rows) == sorted(costs) and all(r["feasible"] for r in rows)
    assert result.flops <= max(costs)


def _toy_search(state: Path, generations: int = 4) -> EvolutionSearch:
    """A real search over the OFA space with a cheap objective: feasible when the choices sum to at most 1820 (about
    half of random subnets; some children are not, so generations also draw fresh candidates), scored by a weighted
    sum."""
    weights = random.Random(7).choices(range(-3, 4), k=len(SPACE.keys))
    return EvolutionSearch(SPACE, SearchSettings.for_population(8, generations, seed=3),
                           score=lambda g: (sum(w * v for w, v in zip(weights, g)), 0.0),
                           feasible=lambda g: sum(g) <= 1820, state_path=state)


def _resume_edited(folder: Path, edit) -> EvolutionSearch:
    """A toy search stopped after one generation, its saved ``folder/state.json`` changed by ``edit(state)``, then
    resumed by a fresh search. An infinite number is written as ``1e999`` (JSON's ``Infinity`` is not JSON)."""
    _toy_search(folder / "state.json", generations=2).run(stop_after=1)
    state = json.loads((folder / "state.json").read_text())
    edit(state)
    (folder / "state.json").write_text(json.dumps(state).replace("Infinity", "1e999"))
    resumed = _toy_search(folder / "other.json", generations=2)
    resumed.resume(folder / "state.json")
    return resumed


def test_resume_continues_the_random_draws_of_the_stopped_search(tmp_path):
    straight = _toy_search(tmp_path / "straight.json")
    straight.run()
    stopped = _toy_search(tmp_path / "stopped.json")
    stopped.run(stop_after=1)
    resumed = _toy_search(tmp_path / "resumed.json")
    resumed.resume(tmp_path / "stopped.json")
    assert resumed.generation == 1 and resumed.rng.getstate() == stopped.rng.getstate()
    resumed.run()
    assert list(resumed.scores) == list(straight.scores) and resumed.top_k == straight.top_k
    assert resumed.rng.getstate() == straight.rng.getstate()
    # the generations after the first are drawn: a fresh generator (seed 3 again) would breed other candidates
    fresh = _toy_search(tmp_path / "fresh.json")
    fresh.run(stop_after=1)
    fresh.rng = random.Random(3)
    fresh.run()
    assert list(fresh.scores) != list(straight.scores)


@pytest.fixture(scope="module")
def stopped_state(files):
    """A search stopped after its first generation (population 3 of 2 generations)."""
    out = files["root"] / "stopped"
    assert _search(files, out, Constraint.parse("flops", "22M"), generations=2, stop_after=1) is None
    return out


@pytest.mark.parametrize("change, what", [
    ({"constraint": Constraint.parse("flops", "22.004M")}, "key"),  # prints as 22M too
    ({"constraint": Constraint.parse("params", "22M")}, "key"),
    ({"population": 4}, "settings"),
    ({"seed": 1}, "settings"),
    ({"generations": 3}, "settings"),
    ({"resolution": 72}, "key"),
    ({"calib_images": 4}, "key"),
    ({"batch_size": 2}, "key"),
    ({"supernet": "other weights"}, "key"),
    ({"calib": "other images"}, "key"),
])
def test_resume_refuses_a_state_written_by_another_search(files, stopped_state, tmp_path, change, what):
    out = tmp_path / "out"
    shutil.copytree(stopped_state, out)  # the state and the folder's run marker
    options = dict(population=3, generations=2, seed=0, resolution=RESOLUTION, calib=files["calib"],
                   weights=files["ofa"], constraint=Constraint.parse("flops", "22M"))
    if change.get("supernet"):
        tensors = supernet_state_dict("ofa", "architecture.")
        tensors["architecture.head.fc.weight"] += 1e-3
        options["weights"] = tmp_path / "other.pth"
        torch.save({"state_dict": dict(tensors), "meta": {}}, options["weights"])
    elif change.get("calib"):
        other = tmp_path / "calib"
        other.mkdir()
        for i, path in enumerate(sorted(files["calib"].iterdir())):  # as many images, one of them another photo
            (other / path.name).write_bytes((files["calib"] / ("coffee.png" if i == 0 else path.name)).read_bytes())
        options["calib"] = other
    else:
        options.update(change)
    constraint = options.pop("constraint")
    with pytest.raises(RazorzooError, match=f"was written by a search with other {what} "):
        specialize("ofa_supernet", constraint, val=files["val"], out=out, resume=True, **options)
    # the same options resume it
    same = dict(population=3, generations=2, seed=0, resolution=RESOLUTION, calib=files["calib"], weights=files["ofa"])
    assert specialize("ofa_supernet", Constraint.parse("flops", "22M"), val=files["val"], out=out, resume=True,
                      stop_after=1, **same) is None


def test_resume_of_a_latency_search_refuses_other_threads(files, tmp_path):
    """Latencies (hence which candidates are feasible) depend on the thread count they are measured with: a
    latency search stopped with 1 thread is not resumed with 2, even with a profile measured with 2."""
    options = dict(population=2, generations=2, seed=0, resolution=RESOLUTION, calib=files["calib"],
                   val=files["val"], weights=files["ofa"], out=tmp_path / "out")
    assert specialize("ofa_supernet", Constraint.parse("latency", "1s"), stop_after=1, **options) is None
    with pytest.raises(RazorzooError, match="was written by a search with other key "):
        specialize("ofa_supernet", Constraint.parse("latency", "1s"), resume=True, threads=2,
                   profile=tmp_path / "two_threads.json", **options)


def test_calib_images_is_the_number_of_images_calibrated_on(files, tmp_path, capsys):
    out = tmp_path / "two"
    assert cli_main(["specialize", "ofa_supernet", "--flops", "22M", "--calib", str(files["calib"]), "--val",
                     str(files["val"]), "-o", str(out), "--weights", str(files["ofa"]), "--population", "2",
                     "--generations", "1", "--resolution", str(RESOLUTION), "--calib-images", "2"]) == 0
    err = capsys.readouterr().err
    assert "reading 2 calibration images and 4 validation images at 64px" in err  # progress lines, without --quiet
    assert "generation 1/1, candidate 2/2: " in err
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["razorzoo_calibration"])["images"] == 2
    model = razorzoo.load_classifier(out / "model.safetensors")
    subnet = razorzoo.load_subnet(out / "subnet.yaml")
    expected = razorzoo.build_classifier(out / "subnet.yaml")
    expected.load_state_dict(razorzoo.extract_subnet(torch.load(files["ofa"])["state_dict"], subnet))
    first_two = sorted(files["calib"].iterdir())[:2]  # astronaut.png, chelsea.png
    with threads_limit(1):
        razorzoo.calibrate_bn(expected, ClassifierTransform(ClassifierPreprocess(73, 64, backend="pillow"))(first_two))
    for key, value in expected.state_dict().items():
        if key.endswith(("running_mean", "running_var")):
            torch.testing.assert_close(model.state_dict()[key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_latency_table_entries_are_per_input_size(files):
    """A unit's latency depends on the size it runs at: a profile measured at 64 px has no entry for the same
    network at 96 px, and measuring there adds one entry per unit instead of reusing the 64 px ones. Only OFA's
    head (after the last conv's global pooling) sees 1 x 1 at both sizes: the same work, one entry."""
    model = _smallest_classifier()
    small = {s: shape for s, _, shape in block_signatures(model, (1, 3, 64, 64))}
    large = {s: shape for s, _, shape in block_signatures(model, (1, 3, 96, 96))}
    shared = set(small) & set(large)
    assert [s.split(":")[:2] for s in shared] == [["head", "1024x1x1"]] and len(small) > 10
    # the stem sees the input, the first block half of it
    assert list(small.values())[:2] == [(1, 3, 64, 64), (1, 16, 32, 32)]
    profile = DeviceProfile(repeats=1)
    profile.predict(model, (1, 3, 64, 64))
    assert set(profile.entries) == set(small)
    with pytest.raises(RazorzooError, match="no entry for 'first_conv:3x96x96:"):
        profile.predict(model, (1, 3, 96, 96), measure=False)
    profile.predict(model, (1, 3, 96, 96))
    assert set(profile.entries) == set(small) | set(large)


def test_specialize_options_change_what_they_say(files, tmp_path, capsys):
    """--latency with --threads and --profile: the profile is measured with those threads, saved where asked and
    reused; --seed chooses the candidates; --resolution is what FLOPs are counted at; --quiet prints no progress;
    an unknown --backend is refused."""
    profile = tmp_path / "profile.json"
    out = tmp_path / "latency"
    argv = ["specialize", "ofa_supernet", "--calib", str(files["calib"]), "--val", str(files["val"]), "--weights",
            str(files["ofa"]), "--population", "2", "--generations", "1", "--quiet"]
    assert cli_main([*argv, "--latency", "1s", "-o", str(out), "--threads", "2", "--profile", str(profile),
                     "--resolution", "48", "--seed", "4"]) == 0
    assert capsys.readouterr().err == ""
    saved = DeviceProfile.load(profile)
    assert saved.threads == 2 and saved.entries and not (out / "device_profile.json").exists()
    summary = json.loads((out / "specialize.json").read_text())
    assert summary["latency"]["threads"] == 2 and summary["resolution"] == 48
    assert summary["flops"] == _flops(_genome_of(out), 48) != _flops(_genome_of(out), RESOLUTION)
    state = json.loads((out / "search_state.json").read_text())
    assert state["settings"]["seed"] == 4 and len(state["scores"]) == 2
    other_seed = tmp_path / "seed0"
    assert cli_main([*argv, "--flops", "1G", "-o", str(other_seed), "--resolution", "48"]) == 0
    assert _scored(other_seed) != _scored(out)
    code = cli_main([*argv, "--latency", "1s", "-o", str(tmp_path / "onnx"), "--backend", "onnx"])
    assert code == 2 and "unknown latency backend 'onnx'" in capsys.readouterr().err


def _genome_of(out: Path) -> tuple:
    values = {k.removeprefix("backbone."): v for k, v in razorzoo.load_subnet(out / "subnet.yaml").to_dict().items()}
    return tuple(values[k] for k in SPACE.keys)


def test_progress_lines_name_each_generations_best_score(tmp_path):
    lines = []
    search = _toy_search(tmp_path / "state.json", generations=2)
    search.progress = lines.append
    search.run()
    best = [line for line in lines if "best so far" in line]
    top = search.scores[search.top_k[0]]  # (weighted sum, 0.0): both parts shown, as :.4g numbers
    assert len(best) == 2 and best[-1].endswith(f"best so far: score {top[0]:.4g}, {top[1]:.4g}"), best


def test_a_saved_candidate_that_is_not_an_object_is_named_in_the_refusal(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a short relative name: the message quotes it whole
    for wrong, shown in ((5, "5"), ([5, 6], "a list of 2 items")):
        with pytest.raises(RazorzooError) as info:
            _resume_edited(Path("."), lambda state, wrong=wrong: state["candidates"].__setitem__(0, wrong))
        assert str(info.value) == f"search state 'state.json': a saved candidate is {shown}, not an object of choices"


RNG_CHANGES = {
    "a word over 32 bits": lambda rng: rng[1].__setitem__(0, 1 << 32),
    "a negative word": lambda rng: rng[1].__setitem__(5, -1),
    "a float word": lambda rng: rng[1].__setitem__(5, 1.0),
    "too few words": lambda rng: rng.__setitem__(1, rng[1][:624]),
    "the index past the words": lambda rng: rng[1].__setitem__(624, 625),
    "another version": lambda rng: rng.__setitem__(0, 2),
    "gauss not finite": lambda rng: rng.__setitem__(2, float("inf")),
    "gauss text": lambda rng: rng.__setitem__(2, "0.5"),
}


@pytest.mark.parametrize("change", RNG_CHANGES)
def test_a_saved_random_state_is_checked_word_by_word(change, tmp_path):
    with pytest.raises(RazorzooError) as info:
        _resume_edited(tmp_path, lambda state: RNG_CHANGES[change](state["rng"]))
    assert str(info.value).endswith(": rng is not a random-generator state razorzoo wrote"), str(info.value)


def test_a_saved_candidate_outside_the_space_is_refused_as_another_searchs(tmp_path):
    def outside(state: dict) -> None:
        candidate = state["candidates"][0]
        candidate[next(iter(candidate))] = 10 ** 6

    with pytest.raises(RazorzooError) as info:
        _resume_edited(tmp_path, outside)
    message = str(info.value)
    assert message.startswith("search state '") and message.endswith(
        ": a saved ofa candidate is outside the search space; the state file was written for another search"), message


PROFILE = {"format": "razorzoo-device-profile", "version": 1, "backend": "torch", "threads": 2, "batch_size": 1,
           "repeats": 20, "unit": "ms", "machine": {"cpu": "x" * 256}, "entries": {"block:a": 0.5}}


def test_a_device_profile_reads_back_and_each_refusal_names_the_file_and_field(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a short relative name: the message quotes it whole

    def write(**changes) -> str:
        Path("p.json").write_text(json.dumps({**PROFILE, **changes}))
        return "p.json"

    profile = DeviceProfile.load(write())
    assert (profile.backend, profile.threads, profile.repeats) == ("torch", 2, 20)
    assert profile.entries == {"block:a": 0.5} and profile.machine == {"cpu": "x" * 256}
    refusals = {"version 0": {"version": 0}, "version 2": {"version": 2},
                "machine text 257": {"machine": {"cpu": "x" * 257}}, "machine number": {"machine": {"cpu": 5}}}
    messages = {}
    for case, changes in refusals.items():
        with pytest.raises(RazorzooError) as info:
            DeviceProfile.load(write(**changes))
        messages[case] = str(info.value)
        assert messages[case].startswith("device profile 'p.json': "), messages[case]
    assert "version" in messages["version 0"] and "version" in messages["version 2"]
    assert messages["machine number"].endswith(" must be a string of at most 256 characters, not 5")
    assert "cpu" in messages["machine text 257"] and "(257 chars)" in messages["machine text 257"]


def test_a_saved_device_profile_is_the_documented_file_and_loads_back_equal(tmp_path):
    profile = DeviceProfile(threads=2, repeats=5, entries={"block:b": 0.25, "block:a": 0.5}, machine={"cpu": "x"})
    path = profile.save(tmp_path / "new" / "folder" / "p.json")  # folders made as needed
    assert json.loads(path.read_text()) == {
        "format": "razorzoo-device-profile", "version": 1, "backend": "torch", "threads": 2, "batch_size": 1,
        "repeats": 5, "unit": "ms", "machine": {"cpu": "x"}, "entries": {"block:a": 0.5, "block:b": 0.25}}
    assert DeviceProfile.load(path) == profile


def test_a_units_signature_is_its_input_and_every_layer_in_a_stable_text():
    """The keys a saved profile's entries are read back by (a profile measured on one machine is shared with
    another razorzoo): the unit, its input shape, and each leaf layer with its sizes, then a residual."""
    model = _smallest_classifier()
    signatures = [s for s, _, _ in block_signatures(model, (1, 3, 64, 64))]
    assert signatures[0] == "first_conv:3x64x64:conv3-16k3s2g1,bn,hardswish"
    assert signatures[1] == "block:16x32x32:conv16-16k3s1g16,bn,relu,conv16-16k1s1g1,bn,res-identity"
    assert signatures[2] == "block:16x32x32:conv16-48k1s1g1,bn,relu,conv48-48k3s2g48,bn,relu,conv48-16k1s1g1,bn"
    assert signatures[4] == ("block:16x16x16:conv16-48k1s1g1,bn,relu,conv48-48k3s2g48,bn,relu,adaptiveavgpool2d,"
                             "conv48-16k1s1g1,relu,conv16-48k1s1g1,hsigmoid,conv48-24k1s1g1,bn")
    assert signatures[-1] == "head:1024x1x1:adaptiveavgpool2d,fc1024-1000"
    assert len(set(signatures)) == len(signatures) == 14


@pytest.mark.parametrize("model", ["spos_0.33M", "yolov5s-spos_0.33M"])
def test_latency_tables_refuse_networks_that_are_not_mobilenet_classifiers(model):
    from helpers import fixture_model

    net = fixture_model(model)
    with pytest.raises(RazorzooError) as info:
        block_signatures(net, (1, 3, 64, 64))
    assert str(info.value) == ("latency tables cover AttentiveNAS/OFA classifiers (razorzoo.build_classifier of an "
                               f"attentive or ofa subnet), not {type(net).__name__}")
    with pytest.raises(RazorzooError, match="not Linear$"):
        block_signatures(torch.nn.Linear(2, 2), (1, 2))


def test_a_new_profile_records_the_machine_it_is_measured_on():
    import platform

    from razorzoo.version import __version__

    machine = DeviceProfile().machine
    cpu = platform.processor()
    if not cpu:  # Linux leaves it empty: the kernel's CPU model name is recorded instead
        names = [line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")]
        cpu = names[0].split(":", 1)[1].strip() if names else ""
    assert machine == {"machine": platform.machine(), "processor": cpu, "system": platform.system(),
                       "python": platform.python_version(), "torch": torch.__version__, "razorzoo": __version__}
    assert machine["machine"]


def test_a_prediction_is_the_sum_of_the_units_entries_and_repeats_are_bounded():
    model = _smallest_classifier()
    signatures = [s for s, _, _ in block_signatures(model, (1, 3, 64, 64))]
    entries = {s: 0.25 * (i + 1) for i, s in enumerate(signatures)}  # exact in binary: the sum is exact too
    profile = DeviceProfile(entries=dict(entries))
    assert profile.predict(model, (1, 3, 64, 64), measure=False) == sum(entries.values()) == 0.25 * 14 * 15 / 2
    assert profile.entries == entries  # nothing measured
    with pytest.raises(RazorzooError) as info:  # another size: no entries, and measuring was not allowed
        profile.predict(model, (1, 3, 96, 96), measure=False)
    assert str(info.value).startswith("the device profile has no entry for 'first_conv:3x96x96:") and \
        str(info.value).endswith("; measure it on this machine (measure=True)")
    for repeats in (1, 1000):
        assert DeviceProfile(repeats=repeats).repeats == repeats
    for repeats in (0, 1001, 2.5, True):
        with pytest.raises(RazorzooError) as info:
            DeviceProfile(repeats=repeats)
        assert str(info.value).startswith("repeats must be "), str(info.value)


@pytest.mark.parametrize("word, value", [(3, 0), (3, (1 << 32) - 1), (624, 624), (624, 0)],
                         ids=["word 0", "word 2^32-1", "index 624", "index 0"])
def test_a_saved_random_state_at_the_edges_of_its_range_resumes(word, value, tmp_path):
    resumed = _resume_edited(tmp_path, lambda state: state["rng"][1].__setitem__(word, value))
    assert resumed.rng.getstate()[1][word] == value


def _observed_search(mutate_prob: float, num_mutation: int = 3):
    """A toy search (population 8, top-k 2, 3 generations) whose constraint checks and progress lines are recorded:
    ``calls`` holds every genome ``feasible`` was asked about, ``lines`` each line with ``len(calls)`` at that time."""
    calls, lines = [], []
    weights = random.Random(11).choices(range(-3, 4), k=len(SPACE.keys))

    def feasible(genome):
        calls.append(genome)
        return sum(genome) <= 1820

    settings = SearchSettings(population=8, generations=3, top_k=2, num_mutation=num_mutation, num_crossover=3,
                              mutate_prob=mutate_prob, seed=5)
    search = EvolutionSearch(SPACE, settings, score=lambda g: (sum(w * v for w, v in zip(weights, g)), 0.0),
                             feasible=feasible, progress=lambda line: lines.append((line, len(calls))))
    return search, calls, lines


def test_each_generation_keeps_the_best_scored_and_breeds_from_them():
    """MMRazor's loop, generation by generation: the population is topped up with feasible random subnets, every
    candidate is scored once, the top-k are the best of everything scored so far (compared by score: ties are
    interchangeable), and the next generation's mutations (``mutate_prob`` 0: copies) and crossovers (each choice
    from one of two top-k parents) are bred from those top-k only, feasible, at most as many as asked for."""
    search, calls, _ = _observed_search(mutate_prob=0.0)
    scored_calls = []
    search.score = lambda g, score=search.score: scored_calls.append(g) or score(g)
    mixed = []
    for generation in range(1, 4):
        bred = list(search.candidates)
        search.run(stop_after=generation)
        assert search.generation == generation and len(scored_calls) == len(set(scored_calls)) == len(search.scores)
        assert all(sum(g) <= 1820 for g in search.scores)  # only feasible subnets are scored
        assert set(bred) <= set(search.scores)  # the bred candidates were scored with the random ones
        best = sorted((s for s in search.scores.values()), reverse=True)[:2]
        assert [search.scores[g] for g in search.top_k] == best
        parents = set(search.top_k)
        children = search.candidates
        mutated, crossed = children[:3], children[3:]
        # 10 tries per wanted child: enough for all 6 here (most children meet the constraint)
        assert len(children) == 6 and all(sum(g) <= 1820 for g in children)
        assert all(child in parents for child in mutated)  # mutate_prob 0: a parent unchanged
        for child in crossed:
            assert any(all(c in (x, y) for c, x, y in zip(child, a, b)) for a in parents for b in parents), child
        mixed += [child for child in crossed if child not in parents]
    assert mixed  # crossovers of two different parents take choices from both
    assert len(calls) > len(search.scores)  # children and samples that failed the constraint were checked too


def test_breeding_gives_up_after_ten_tries_per_wanted_child():
    """Upstream's limit: when no child meets the constraint, 10 x (mutations + crossovers) are tried, and the next
    generation starts with none bred (it is filled with random subnets)."""
    search, calls, _ = _observed_search(mutate_prob=0.5)
    breeding = []  # the number of checks made when the first generation was done, before breeding
    search.progress = lambda line: breeding.append(len(calls)) if "best so far" in line else None
    search.feasible = lambda genome: calls.append(genome) or (not breeding and sum(genome) <= 1820)
    search.run(stop_after=1)
    assert search.candidates == [] and len(calls) - breeding[0] == 10 * 3 + 10 * 3


def test_a_generation_that_needs_one_random_subnet_says_so_in_the_singular():
    """Three copies bred (mutate_prob 0) into a population of four: one random sample fills it."""
    lines = []
    settings = SearchSettings(population=4, generations=2, top_k=1, num_mutation=3, num_crossover=0, mutate_prob=0.0)
    search = EvolutionSearch(SPACE, settings, score=lambda g: (float(sum(g)),), feasible=lambda g: True,
                             progress=lines.append)
    search.run()
    assert ("generation 2/2: 1 random candidate meeting the constraint, from 1 sample, with 3 candidates bred from "
            "the last generation") in lines


def test_a_mutation_resamples_choices_at_the_mutation_probability():
    """``mutate_prob`` 1: every choice is drawn afresh (children are random subnets, not copies of the parents)."""
    search, _, _ = _observed_search(mutate_prob=1.0)
    search.run(stop_after=1)
    mutated = search.candidates[:3]
    assert len(mutated) == 3 and not set(mutated) & set(search.top_k)
    for generation in (2, 3):  # the top-k stay the best of everything scored, carried over when no child beats them
        search.run(stop_after=generation)
        assert [search.scores[g] for g in search.top_k] == sorted(search.scores.values(), reverse=True)[:2]
    # each choice is the parent's or a fresh draw with probability 1/2 and 1/2: a child shares some choices
    # with a parent, and differs in others
    search, _, _ = _observed_search(mutate_prob=0.5)
    search.run(stop_after=1)
    for child in search.candidates[:3]:
        same = max(sum(c == p for c, p in zip(child, parent)) for parent in search.top_k)
        assert len(SPACE.keys) // 4 < same < len(SPACE.keys), (same, len(SPACE.keys))


def test_each_generations_progress_lines_count_what_they_say():
    """``generation g/G: N random candidates meeting the constraint, from S samples, with B candidates bred from the
    last generation``, then one numbered line per candidate: N, S and B counted here, from the constraint checks
    (no mutations: every check of a generation's fill is a random sample)."""
    from razorzoo.wording import count

    search, calls, lines = _observed_search(mutate_prob=0.0, num_mutation=0)
    checked_before = 0
    for generation in range(1, 4):
        bred = len(search.candidates)
        search.run(stop_after=generation)
        mine = [(line, n) for line, n in lines if line.startswith(f"generation {generation}/3")]
        (fill, checked), *candidates, (done, _) = mine
        samples = checked - checked_before
        expected = (f"generation {generation}/3: {count(8 - bred, 'random candidate')} meeting the constraint, from "
                    f"{count(samples, 'sample')}" + (f", with {count(bred, 'candidate')} bred from the last generation"
                                                     if bred else ""))
        assert fill == expected and samples >= 8 - bred
        assert [line.split(":")[0] for line, _ in candidates] == [
            f"generation {generation}/3, candidate {i}/8" for i in range(1, 9)]
        assert "best so far" in done
        checked_before = len(calls)


def test_the_top_k_carry_over_when_a_generation_is_worse():
    """A later generation that scores below the first does not replace the first's top-k: they stay in the pool."""
    settings = SearchSettings(population=4, generations=2, top_k=2, num_mutation=0, num_crossover=0)
    search = EvolutionSearch(SPACE, settings, score=lambda g: (1.0 if search.generation == 0 else 0.0, sum(g)),
                             feasible=lambda g: True)
    first = search.run(stop_after=1)
    assert search.run() == first and [search.scores[g][0] for g in first] == [1.0, 1.0]
    assert len(search.scores) == 8  # the second generation was scored (four fresh random subnets)


class _Recorder(torch.nn.Module):
    """A model that records, for each call, its input's shape, torch's thread count, its own mode and whether
    inference mode was on."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x):
        self.calls.append((tuple(x.shape), torch.get_num_threads(), self.training, torch.is_inference_mode_enabled()))
        return x


def test_time_model_is_the_median_of_its_repeats_after_a_warm_up_on_its_threads(monkeypatch):
    """``time_model``: warm-up calls, then ``repeats`` timed ones, in eval and inference mode on ``threads``
    threads, on one input of the given shape; the result is the median in milliseconds (the clock is read around
    each timed call only: here it advances 5, 1, 90, 3 and 7 ms, whose mean would be 21.2)."""
    from razorzoo.search import latency

    readings = iter([0.0, 0.005, 1.0, 1.001, 2.0, 2.090, 3.0, 3.003, 4.0, 4.007])
    monkeypatch.setattr(latency.time, "perf_counter", lambda: next(readings))
    model = _Recorder().train()
    saved = torch.get_num_threads()
    assert latency.time_model(model, (1, 3, 32, 24), threads=2, repeats=5) == pytest.approx(5.0)
    assert model.calls == [((1, 3, 32, 24), 2, False, True)] * (latency.WARMUP + 5)
    assert torch.get_num_threads() == saved
    with pytest.raises(RazorzooError, match=r"^unknown latency backend 'onnx'; available: torch$"):
        latency.time_model(model, (1, 3, 8, 8), backend="onnx")


STATE_EDGES = {  # the toy search: population 8, top-k 1, 2 generations; each bound and one past it
    "generation 2": (lambda s: s.update(generation=2), None),
    "generation 3": (lambda s: s.update(generation=3), "generation must be an integer in 0..2, not 3"),
    "8 candidates": (lambda s: s.update(candidates=(s["candidates"] * 8)[:8]), None),
    "9 candidates": (lambda s: s.update(candidates=(s["candidates"] * 9)[:9]),
                     "candidates must be a list of at most 8 items, not a list of 9 items"),
    "2 top-k": (lambda s: s.update(top_k=s["top_k"] * 2), "top_k must be a list of at most 1 items, not a list of 2"),
    "24 scores": (lambda s: s.update(scores=(s["scores"] * 24)[:24]), None),
    "25 scores": (lambda s: s.update(scores=(s["scores"] * 25)[:25]),
                  "scores must be a list of at most 24 items, not a list of 25 items"),
    "version 0": (lambda s: s.update(version=0), "version must be an integer in 1..1, not 0"),
    "version 2": (lambda s: s.update(version=2), "version must be an integer in 1..1, not 2"),
    "no format": (lambda s: s.pop("format"),
                  "is not a razorzoo search state (no \"format\": \"razorzoo-search-state\")"),
    "top-k unscored": (lambda s: s.update(scores=[e for e in s["scores"] if e["subnet"] != s["top_k"][0]]),
                       "top_k[0] has no entry in scores; the file was edited or is damaged: start anew"),
}


@pytest.mark.parametrize("edge", STATE_EDGES)
def test_a_saved_states_sizes_are_checked_at_their_bounds(edge, tmp_path, monkeypatch):
    """Each size bound of a saved search state (from the search's own settings) admits its limit and refuses one
    more, naming the field and the file in one line."""
    monkeypatch.chdir(tmp_path)  # a short relative name: the message quotes it whole
    edit, refusal = STATE_EDGES[edge]
    if refusal is None:
        saved = {}
        resumed = _resume_edited(Path("."), lambda state: (edit(state), saved.update(state)))
        assert resumed.generation == saved["generation"] and len(resumed.candidates) == len(saved["candidates"])
        assert len(resumed.scores) == len({json.dumps(e["subnet"], sort_keys=True) for e in saved["scores"]})
        return
    with pytest.raises(RazorzooError) as info:
        _resume_edited(Path("."), edit)
    assert str(info.value).startswith("search state 'state.json'") and refusal in str(info.value), str(info.value)
    assert "\n" not in str(info.value)


def test_a_budget_equal_to_the_smallest_subnets_cost_is_reachable(files):
    """The smallest subnet's exact FLOPs is a budget one subnet meets: not refused as unreachable (one FLOP less
    is), so the search looks for it among random samples, and says it found too few to fill a population."""
    smallest = _flops(SPACE.smallest())
    with pytest.raises(RazorzooError) as below:
        _search(files, files["root"] / "below_smallest", Constraint("flops", float(smallest - 1)), population=1)
    assert "no ofa subnet meets" in str(below.value)
    with pytest.raises(RazorzooError) as equal:
        _search(files, files["root"] / "at_smallest", Constraint("flops", float(smallest)), population=1)
    assert str(equal.value).startswith("found only 0 of 1 subnet that meet the constraint in 101 random samples")


def test_force_and_params_reach_the_search(files, tmp_path, capsys):
    """``-o`` holding a user's file is refused unless ``--force``; ``--params`` is the budget searched for. An
    unreachable budget stops each run right after the output check, before any search."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("the user's")
    argv = ["specialize", "ofa_supernet", "--calib", str(files["calib"]), "--val", str(files["val"]), "--weights",
            str(files["ofa"]), "-o", str(out), "--resolution", str(RESOLUTION)]
    assert cli_main([*argv, "--flops", "1M"]) == 2
    assert "holds files that `razorzoo specialize` did not write" in capsys.readouterr().err
    assert cli_main([*argv, "--flops", "1M", "--force"]) == 2
    assert "no ofa subnet meets flops<=1M" in capsys.readouterr().err  # past the output check
    assert cli_main([*argv, "--params", "1K", "--force"]) == 2
    assert "no ofa subnet meets params<=0.001M" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
