"""The import contracts in ``.importlinter`` hold: layers (a module imports only from the layers below it) and no
import cycles. Running ``lint-imports`` here makes the README's test command enforce them."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([sys.executable, "-c", LINT, "--no-cache"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=120)


def test_import_contracts_are_kept():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def test_an_upward_import_breaks_the_layers(tmp_path):
    # the cycle this contract was written against: the gallery (zoo) borrowing a helper from the CLI
    shutil.copytree(ROOT / "razorzoo", tmp_path / "razorzoo", ignore=shutil.ignore_patterns("cards", "__pycache__"))
    shutil.copy(ROOT / ".importlinter", tmp_path)
    gallery = tmp_path / "razorzoo" / "zoo" / "gallery.py"
    gallery.write_text(gallery.read_text() + "\nfrom razorzoo.cli.browse import format_table  # noqa: E402\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "razorzoo.zoo is not allowed to import razorzoo.cli" in result.stdout
