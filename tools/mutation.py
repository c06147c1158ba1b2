"""Mutation testing of the modules that carry razorzoo's promises, with mutmut (not part of the default CI run).

Usage: python tools/mutation.py [--jobs N] TARGET [TARGET ...]   (targets: see TARGETS; ``all`` for every one;
``--jobs``: mutants tested at a time, default one per CPU core)

Each target names the module(s) to mutate, the test files that guard them, and which of their functions to mutate
(``checkpoint``, ``nms`` and ``hub`` focus on the allow-list, NMS and revision-resolution functions, to finish in
minutes to an hour on two cores). The run happens in a temporary copy
of the working tree (mutmut writes ``mutants/`` and its config next to the code), so the checkout stays clean.
mutmut runs, for every mutant, only the tests that reach the mutated function; a mutant that no test kills is
listed at the end (``mutmut results`` / ``mutmut show NAME`` in the printed directory explain each one).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {  # name -> (modules to mutate, tests that guard them, mutant-name patterns: the functions to mutate)
    "checkpoint": (["razorzoo/weights/checkpoint.py"],
                   ["tests/test_checkpoint.py", "tests/test_unpickler_gadgets.py"],
                   ["*find_class*", "*_latin1_encode*", "*_refuse_placeholders*", "*x__walk*", "*_tensors_only*",
                    "*x_read_checkpoint*"]),
    "nms": (["razorzoo/detection/nms.py"],
            ["tests/test_postprocess.py", "tests/test_detection_promises.py"],
            ["*x_nms__*", "*x_batched_nms*", "*x__iou*"]),
    "postprocess": (["razorzoo/detection/postprocess.py", "razorzoo/detection/coders.py"],
                    ["tests/test_postprocess.py", "tests/test_detection_promises.py",
                     "tests/hostile/test_images_and_args.py"], ["*"]),
    "fetch": (["razorzoo/storage/fetch.py"],
              ["tests/test_fetch.py", "tests/test_fetch_promises.py", "tests/hostile/test_storage_and_hub.py"], ["*"]),
    "extract": (["razorzoo/weights/extract.py", "razorzoo/weights/verify.py"],
                ["tests/test_extract.py", "tests/test_verify.py"], ["*"]),
    "verify": (["razorzoo/weights/verify.py"], ["tests/test_verify.py"], ["*"]),
    "hub": (["razorzoo/storage/hub.py"],
            ["tests/test_hub.py", "tests/test_deploy_hub.py", "tests/hostile/test_storage_and_hub.py"],
            ["*x_check_revision*", "*x_parse_hub_ref*", "*x__head*", "*x__resolve*", "*x__git_blob_sha1*",
             "*x__hub_file*", "*x__recorded*", "*x__record__*", "*x_fetch_hub_files*", "*x_download_hub_model*",
             "*x_download_hub_onnx*", "*x_load_hub_card*"]),
    # the newer layers (issue 21): every function, against the tests that cover each module
    "transforms": (["razorzoo/detection/transforms.py"],
                   ["tests/test_preprocess.py", "tests/test_classifiers.py", "tests/test_detection_promises.py",
                    "tests/hostile/test_images_and_args.py"], ["*"]),
    "publish": (["razorzoo/publish.py"],
                ["tests/test_hub.py", "tests/hostile/test_storage_and_hub.py",
                 # the card's training section from one-epoch runs (the overfit run's fixture outlasts a mutant)
                 "tests/test_train_run.py::test_a_pushed_runs_card_quotes_its_settings_and_validation",
                 "tests/test_train_run.py::test_an_unreadable_training_record_publishes_no_training_section",
                 "tests/test_train_run.py::test_an_edited_training_records_values_are_shown_bounded",
                 "tests/test_train_run.py::test_the_card_names_the_dataset_by_the_annotation_files_name"],
                ["*"]),
    "evaluation": (["razorzoo/evaluation/coco.py", "razorzoo/evaluation/engine.py", "razorzoo/evaluation/imagenet.py",
                    "razorzoo/evaluation/sources.py", "razorzoo/detection/batch_shapes.py"],
                   ["tests/test_val_coco.py", "tests/test_val_protocol.py", "tests/test_val_imagenet.py",
                    "tests/test_sources.py", "tests/test_predict_flags.py"], ["*"]),
    "ray": (["razorzoo/evaluation/ray_adapter.py"], ["tests/test_ray.py"], ["*"]),
    # deploy/'s rules that need no export: the gate's matching and verdicts, the metadata schema (each mutant of an
    # exporting function re-exports, 10-30 s a test: those stay with the hand mutations of issue 21)
    "deploy": (["razorzoo/deploy/parity.py", "razorzoo/deploy/metadata.py"],
               ["tests/test_parity_matching.py", "tests/test_deploy_metadata.py", "tests/hostile/test_documents.py"],
               ["*x_match_detections*", "*x_match_by_overlap*", "*x__iou*", "*ParityReport*", "*x_default_tolerance*",
                "*x_synthetic_images*", "*x_read_metadata*", "*x__check*", "*x__output_names*", "*x_is_openvino_ir*"]),
    # the search's machinery against the tests that run it on toy objectives and small inputs; specialize.py and
    # costs.py, whose tests search real supernets (a minute or two a mutant on two cores), are not in this run
    "search": (["razorzoo/search/evolution.py", "razorzoo/search/latency.py", "razorzoo/search/calibrate.py"],
               ["tests/test_search_pins.py", "tests/test_calibrate.py", "tests/hostile/test_documents.py"], ["*"]),
}
COPY = ("razorzoo", "tests", "cards", "conversion", "setup.cfg", "setup.py", "pyproject.toml", "README.md")


def _config(modules: list[str], tests: list[str]) -> str:
    lines = ["[mutmut]", "source_paths =", "    razorzoo", "only_mutate ="]
    lines += [f"    {m}" for m in modules]
    lines += ["pytest_add_cli_args_test_selection ="] + [f"    {t}" for t in tests]
    # mutmut copies only the .py files of the package: the package data goes in as also_copy
    data = ["cards", "conversion", "razorzoo/zoo/cards", "razorzoo/zoo/gallery_assets"]
    # in-process pytest (``-n 0``: none of setup.cfg's xdist workers), in file order, stopping at the first kill
    lines += ["pytest_add_cli_args =", "    -p", "    no:randomly", "    -n", "    0", "    -x", "also_copy ="]
    lines += [f"    {d}" for d in data]
    # a mutant that loops for ever (a search's `while`, a retry) is stopped at 6x its tests' CPU time, not 30x;
    # mutants run in processes forked from a server that never ran a test: forked from mutmut's own process, which
    # ran the suite once, a test that sets torch's threads above one (latency tables) inherits an OpenMP pool that
    # hangs in the child, and the hang counted as a kill (a timeout)
    lines += ["timeout_multiplier = 3", "process_isolation = forkserver"]
    lines.append("")
    return "\n".join(lines)


def run(target: str, jobs: int | None = None) -> int:
    modules, tests, functions = TARGETS[target]
    work = Path(tempfile.mkdtemp(prefix=f"razorzoo-mutation-{target}-"))
    work.chmod(0o755)  # readable like a checkout: a hostile-input test runs an operation as an unprivileged user
    for name in COPY:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, work / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            shutil.copy2(source, work / name)
    setup = work / "setup.cfg"
    setup.write_text(setup.read_text() + "\n" + _config(modules, tests))
    # one thread: mutmut forks a warmed-up pytest per mutant, and a forked OpenMP pool deadlocks. mutmut tests a
    # mutant only with the tests that call its function in the pytest process (a call in a Ray worker or a CLI
    # subprocess is not seen: test such code in-process too); PYTHONPATH makes the processes those tests start run
    # the mutated copy, not the unmutated checkout. The folder must exist before Python starts: a PYTHONPATH entry
    # missing at the first import is skipped for the whole process
    (work / "mutants").mkdir()
    env = {**os.environ, "PYTHONPATH": str(work / "mutants"), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    mutmut = [sys.executable, "-m", "mutmut"]
    print(f"== {target}: mutating {', '.join(modules)} against {', '.join(tests)} in {work}", flush=True)
    children = [] if jobs is None else ["--max-children", str(jobs)]
    code = subprocess.call([*mutmut, "run", *children, *functions], cwd=work, env=env)
    subprocess.call([*mutmut, "results"], cwd=work, env=env)
    return code


if __name__ == "__main__":
    names = sys.argv[1:] or ["--help"]
    jobs = None
    if names[0] == "--jobs" and len(names) > 2 and names[1].isdigit():
        jobs, names = int(names[1]), names[2:]
    if names == ["all"]:
        names = list(TARGETS)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        sys.exit(f"usage: python tools/mutation.py [--jobs N] TARGET ... (one of {', '.join(TARGETS)} or all)")
    sys.exit(max(run(name, jobs) for name in names))
