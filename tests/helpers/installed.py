"""razorzoo as a user installs it: a wheel built from this checkout, installed (not editable) into a folder, run from
a working directory outside the checkout, so nothing of tests/, docs/ or conversion/ can be found.

The wheel is built from a copy of the package sources (a stale ``build/`` in the checkout can never slip in) without
build isolation (no index needed), and installed with ``pip install --no-deps --target``: its dependencies (torch,
...) are the test environment's, the package itself is the wheel's.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_SOURCES = ("razorzoo", "cards", "setup.cfg", "pyproject.toml", "README.md")


@dataclass(frozen=True)
class Installed:
    """An installed wheel: ``site`` (the --target folder), ``wheel`` (the file), ``cwd`` (outside the checkout)."""

    site: Path
    wheel: Path
    cwd: Path

    def env(self, **extra: str) -> dict[str, str]:
        """The environment a command runs in: only the installed package on PYTHONPATH, no progress bars."""
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAZORZOO_CARDS", "RAZORZOO_MIRROR")}
        return {**env, "PYTHONPATH": str(self.site), "RAZORZOO_PROGRESS": "0", **extra}

    def razorzoo(self, *args: str, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
        """``razorzoo ARGS`` through the installed console script."""
        return subprocess.run([str(self.site / "bin" / "razorzoo"), *args], capture_output=True, text=True,
                              cwd=self.cwd, env=self.env(**env), timeout=timeout)

    def python(self, code: str, *args: str, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
        """``python -c CODE ARGS`` with the installed package."""
        return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=self.cwd,
                              env=self.env(**env), timeout=timeout)


def install_wheel(tmp: Path) -> Installed:
    """Build a wheel from this checkout's package sources and install it under ``tmp``."""
    source = tmp / "source"
    source.mkdir(parents=True)
    for name in _SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, source / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, source / name)
    dist = tmp / "dist"
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(source)],
                   check=True, capture_output=True, timeout=600)
    [wheel] = dist.glob("razorzoo-*.whl")
    site = tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target",
                    str(site), str(wheel)], check=True, capture_output=True, timeout=600)
    cwd = tmp / "work"
    cwd.mkdir()
    return Installed(site, wheel, cwd)
