"""Shared fixtures: each test in its own folder, experiment files written there, the CLI
in-process, a small disk to fill, and registries that plugins do not leak out of.
Helpers that are not fixtures live in tests/helpers.py."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from tests.helpers import tiny_experiment
from trainkit.cli import app
from trainkit.config.plugins import load_components
from trainkit.config.registry import REGISTRIES

# Hugging Face's libraries read these when first imported (before any fixture runs): the
# tests never reach the network and keep their own cache, never ~/.cache/huggingface.
_HF_HOME = tempfile.mkdtemp(prefix="trainkit-tests-hf-")
atexit.register(shutil.rmtree, _HF_HOME, ignore_errors=True)
os.environ.update(HF_HOME=_HF_HOME, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")
# W&B likewise: offline unless a test says otherwise, its settings, caches and staged
# artifacts in a folder of the tests', never the user's.
os.environ.update(
    WANDB_MODE="offline",
    WANDB_CONFIG_DIR=os.path.join(_HF_HOME, "wandb-config"),
    WANDB_CACHE_DIR=os.path.join(_HF_HOME, "wandb-cache"),
    WANDB_DATA_DIR=os.path.join(_HF_HOME, "wandb-data"),
)
os.environ.pop("WANDB_API_KEY", None)
# pytest-xdist runs the tests in 2 worker processes (pyproject's addopts). Each with
# torch's default of a thread per core, the workers and the trainings they start would
# ask for twice the cores there are, and spin waiting for them: one thread each.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """Make a real, small filesystem (a tmpfs) to fill up; the test is skipped, with the
    reason, where this machine does not let a test mount one."""
    import subprocess

    mounts: list[Path] = []

    def make(kilobytes: int, read_only: bool = False) -> Path:
        path = tmp_path / f"disk{len(mounts)}"
        path.mkdir()
        options = f"size={kilobytes}k" + (",ro" if read_only else "")
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
            capture_output=True,
            text=True,
        )
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
        mounts.append(path)
        return path

    yield make
    for path in mounts:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture(scope="session", autouse=True)
def _user_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The user's cache folder (decoded image folders) is a temporary one: tests never
    write into ~/.cache, and subprocesses inherit the setting."""
    folder = tmp_path_factory.mktemp("user-cache")
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(folder)
    yield folder
    if before is None:
        del os.environ["XDG_CACHE_HOME"]
    else:
        os.environ["XDG_CACHE_HOME"] = before


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in its own folder, so the default checkpoints/ lands there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    def write(
        config: dict[str, Any] | None = None, name: str = "experiment.yaml", **sections: Any
    ) -> Path:
        path = tmp_path / name
        path.write_text(
            yaml.safe_dump(config if config is not None else tiny_experiment(**sections))
        )
        return path

    return write


@pytest.fixture
def cli() -> Callable[..., Any]:
    """Invoke the real CLI in-process; returns click's Result (exit_code, stdout, stderr)."""
    runner = CliRunner()

    def invoke(*args: str | os.PathLike[str]) -> Any:
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    return invoke


@pytest.fixture(autouse=True)
def _forget_plugins() -> Iterator[None]:
    """Plugins a test registers (modules named tk_*) do not leak into later tests."""
    load_components()
    before = {kind: dict(registry._entries) for kind, registry in REGISTRIES.items()}
    yield
    for kind, registry in REGISTRIES.items():
        registry._entries = before[kind]
    for name in [m for m in sys.modules if m.startswith("tk_")]:
        del sys.modules[name]
