import os

import pytest

# The suite runs on pytest-xdist workers (setup.cfg: ``-n auto``), one per CPU. These must be set before torch is
# imported: each worker (and the processes it starts) gets its share of the cores, and an OpenMP thread waiting for
# work sleeps instead of spinning, so a test that pins more threads than its share (the golden-loss tests pin 2) does
# not slow to a crawl while another worker holds the other core (measured: 175 s -> 21 s for one such test).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS",
                          str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))


# The files that take minutes, longest first (seconds on one worker of a 2-core run, summed from ``--durations=0``:
# 284, 179, 171, 147, 97, 70, 56, 53, 42). xdist hands whole files to its workers in collection order (setup.cfg:
# ``--dist loadfile --no-loadscope-reorder``), so these go first and the many short files fill in around them; a
# long file started last would leave the other worker idle while it runs. Measured on 2 cores, idle: 781 s before
# (2094 tests, 1503 s of test time summed over both workers), 774 s after (2127 tests, 1506 s); a third worker
# (-n 3) was slower: 795 s.
LONGEST_FILES = ("test_deploy.py", "test_docs_snippets.py", "test_deploy_fast.py", "test_train_run.py",
                 "test_specialize.py", "test_search_pins.py", "test_val_coco.py", "test_detector_loss.py",
                 "test_deploy_int8.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the other files keep their order


@pytest.fixture(autouse=True, scope="session")
def _isolated_environment(tmp_path_factory):
    """No test touches the user's caches, the network or a real Hub token."""
    home = tmp_path_factory.mktemp("home")
    saved = dict(os.environ)
    os.environ["RAZORZOO_CACHE"] = str(home / "razorzoo-cache")
    os.environ["HF_HOME"] = str(home / "hf-home")
    os.environ.pop("HF_TOKEN", None)
    os.environ.pop("RAZORZOO_CARDS", None)
    os.environ.pop("RAZORZOO_MIRROR", None)
    os.environ.setdefault("RAZORZOO_PROGRESS", "0")
    # no xet uploads: the test Hub speaks the legacy LFS protocol (huggingface_hub reads this flag at import time)
    os.environ["HF_HUB_DISABLE_XET"] = "1"
    import huggingface_hub.constants

    saved_xet = huggingface_hub.constants.HF_HUB_DISABLE_XET
    huggingface_hub.constants.HF_HUB_DISABLE_XET = True
    yield
    huggingface_hub.constants.HF_HUB_DISABLE_XET = saved_xet
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(autouse=True)
def _restore_environment():
    """Each test starts from the same environment, whatever order tests run in: a test that sets a variable
    directly (e.g. a script's ``main()`` run in-process, as conversion/convert_zoo.py sets ``RAZORZOO_CARDS``)
    does not leak it into the next test."""
    saved = dict(os.environ)
    yield
    if os.environ != saved:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="session")
def installed(tmp_path_factory):
    """razorzoo built as a wheel and installed outside the checkout (helpers/installed.py); built once per session."""
    from helpers.installed import install_wheel

    return install_wheel(tmp_path_factory.mktemp("installed"))


def _run_folder(tmp_path_factory, worker_id, name: str):
    """A folder shared by every xdist worker of this run (in the run's temporary root)."""
    root = tmp_path_factory.getbasetemp()
    folder = (root if worker_id == "master" else root.parent) / name
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def run_cache(tmp_path_factory, worker_id):
    """A razorzoo cache shared by the run's xdist workers, for tests that load the same converted file with
    ``backend=`` from different files (the end-to-end export, 30-60 s, is made once: the cache's own lock makes a
    second process wait for the first one's export and reuse it, as it does for users)."""
    return _run_folder(tmp_path_factory, worker_id, "shared-cache")


@pytest.fixture(scope="session")
def exports(tmp_path_factory, worker_id):
    """``exports(model) -> (eager model, exported file)``: each fixture model exported once per run (``raw``, gate
    on; classifiers at the goldens' 128 px input), for every test file that needs an export. The files are shared
    by the run's xdist workers (in the run's temporary root, under a lock): an export is the suite's most expensive
    step (10-30 s a detector), and test files that export the same model often land on different workers."""
    from filelock import FileLock

    import razorzoo
    from helpers import DETECTORS, fixture_model

    shared = _run_folder(tmp_path_factory, worker_id, "shared-exports")
    done = {}

    def get(model: str):
        if model not in done:
            net = fixture_model(model)
            path = shared / f"{model}.onnx"
            with FileLock(str(shared / f"{model}.lock")):
                if not path.is_file():  # the gate refuses to write a file that does not reproduce the model
                    result = razorzoo.export(net, path, input_size=None if model in DETECTORS else 128)
                    assert result.path == path and path.is_file() and result.parity.passed
            done[model] = net, path
        return done[model]

    return get
