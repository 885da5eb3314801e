"""The layout of docs/architecture.md, held: each package imports only the ones before it
in the pipeline, and the training loop knows nothing of YAML, the CLI or search."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "trainkit"
BASE = {"errors", "console", "files"}
COMPONENTS = {"data", "models", "losses", "optim"}
# What each part of trainkit may import (besides itself): docs/architecture.md's table.
ALLOWED = {
    "__init__": set(),
    "errors": set(),
    "console": set(),
    "files": {"errors"},
    "config": {"errors", "console"},
    "data": BASE | {"config"},
    "models": BASE | {"config", "data"},
    "losses": BASE | {"config", "data"},
    "optim": BASE | {"config"},
    "training": BASE | {"config"} | COMPONENTS,
    "inference": BASE | {"config", "training"} | COMPONENTS,
    "sweep": BASE | {"config", "training"},
    "reports": BASE | {"config", "training", "sweep"},
    "tracking": BASE | {"config", "training"},
    "plugin": BASE | {"config", "data", "losses"},
    "cli": BASE | {"config", "training", "inference", "sweep", "reports", "tracking"},
    "__main__": {"cli"},
}


def imports_of(path: Path) -> set[str]:
    """The trainkit modules a file imports, anywhere in it (inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            if node.module == "trainkit":
                found.update(f"trainkit.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("trainkit")}


def part_of(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1] if parts[1] != "__version__" else "__init__"


def test_every_package_imports_only_what_comes_before_it() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        part = relative.parts[0].removesuffix(".py")
        assert part in ALLOWED, f"{relative}: a new part of trainkit; add it to the architecture"
        for module in imports_of(path):
            target = part_of(module)
            if target not in {part, "__init__"} | ALLOWED[part]:  # __init__: the version
                wrong.append(f"{relative} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_the_loop_knows_nothing_of_configs_the_cli_or_search() -> None:
    loop = imports_of(PACKAGE / "training" / "loop.py")
    assert not {m for m in loop if part_of(m) in ("config", "cli", "sweep", "reports", "tracking")}
    source = (PACKAGE / "training" / "loop.py").read_text()
    for library in ("yaml", "typer", "optuna", "pydantic", "mlflow", "wandb"):
        assert f"import {library}" not in source and f"from {library}" not in source


def test_at_most_six_modules_stay_at_the_top() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 6, top
