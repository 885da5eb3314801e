from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.helpers import tiny_experiment
from trainkit.config.loading import load_config
from trainkit.config.schema import config_model, to_dict, validate
from trainkit.errors import UserError

SHIPPED = Path(__file__).parents[1] / "configs"
CONFIGS = sorted(SHIPPED.rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(SHIPPED)) for p in CONFIGS])
def test_shipped_configs_are_valid(path: Path) -> None:
    config = load_config(path)
    assert config.name
    assert to_dict(config)["model"]["name"] == config.model.name


def test_nielsen_configs_follow_the_books_protocol() -> None:
    """50,000 images to train on, 10,000 held out to choose the epoch by, one config for
    each row of the table that benchmarks/nielsen.py reruns."""
    import runpy

    rows = runpy.run_path(str(SHIPPED.parent / "benchmarks" / "nielsen.py"))["ROWS"]
    assert sorted(p.stem for p in (SHIPPED / "nielsen").glob("*.yaml")) == sorted(
        r[0] for r in rows
    )
    for path in (SHIPPED / "nielsen").glob("*.yaml"):
        config = load_config(path)
        assert round(60_000 * config.data.val_fraction) == 10_000, path
        assert config.checkpoint.monitor == "val/accuracy" and config.data.name == "mnist"


def test_defaults_are_filled_in() -> None:
    config = validate(tiny_experiment())
    assert config.trainer.accumulate_steps == 1
    assert config.checkpoint.mode == "min"  # inferred from the default monitor val/loss
    assert config.data.val_fraction == 0.1
    assert (
        validate(tiny_experiment(checkpoint={"monitor": "val/accuracy"})).checkpoint.mode == "max"
    )


def test_resolved_config_round_trips() -> None:
    config = validate(tiny_experiment())
    again = validate(yaml.safe_load(yaml.safe_dump(to_dict(config))))
    assert to_dict(again) == to_dict(config)
    assert next(iter(to_dict(config)["optimizer"])) == "name"


def error_of(raw: dict) -> str:
    with pytest.raises(UserError) as caught:
        validate(raw, "exp.yaml")
    return str(caught.value)


def test_misspelt_component_suggests_the_closest_name() -> None:
    message = error_of(tiny_experiment(model={"name": "lenett"}))
    assert "model.name" in message
    assert "'lenett'" in message
    assert "did you mean 'lenet'?" in message


def test_misspelt_key_names_its_path_and_suggestion() -> None:
    message = error_of(tiny_experiment(model={"name": "mlp", "dropot": 0.2}))
    assert "model: unknown key 'dropot'; did you mean 'dropout'?" in message


def test_misspelt_section_is_caught() -> None:
    raw = tiny_experiment()
    raw["optimiser"] = raw.pop("optimizer")
    message = error_of(raw)
    assert "unknown key 'optimiser'; did you mean 'optimizer'?" in message
    assert "optimizer: required but missing" in message


def test_bad_value_names_field_expectation_and_input() -> None:
    message = error_of(tiny_experiment(optimizer={"name": "sgd", "lr": -1}))
    assert "optimizer.lr: Input should be greater than 0 (got -1)" in message


def test_a_misspelt_choice_is_one_line_with_the_closest_choice() -> None:
    """A word that is not one of a field's choices gets one line with the closest one,
    also where the field takes a boolean as well (`augment: bool | Literal[...]`)."""
    message = error_of(tiny_experiment(trainer={"precision": "bf61"}))
    assert "trainer.precision: 'bf61' is not one of the choices; did you mean 'bf16'?" in message
    raw = tiny_experiment(data={"name": "cifar10", "augment": "trivial"})
    lines = [line for line in error_of(raw).splitlines() if "data.augment" in line]
    assert len(lines) == 1 and "did you mean 'trivialaugment'?" in lines[0]


def test_nested_section_errors_have_full_paths() -> None:
    message = error_of(tiny_experiment(trainer={"early_stopping": {"patience": 0}}))
    assert "trainer.early_stopping.patience" in message
    message = error_of(tiny_experiment(trainer={"early_stoping": {"patience": 2}}))
    assert "did you mean 'early_stopping'?" in message


def test_cross_field_rules() -> None:
    message = error_of(tiny_experiment(optimizer={"name": "sgd", "momentum": 0, "nesterov": True}))
    assert "nesterov" in message


def test_a_missing_plugin_is_a_user_error() -> None:
    with pytest.raises(UserError, match="cannot import 'no_such_plugin_module'"):
        validate(tiny_experiment(plugins=["no_such_plugin_module"]))


def test_plugin_components_join_the_schema(tmp_path: Path) -> None:
    (tmp_path / "tk_plugin_double.py").write_text(
        "from pydantic import Field\n"
        "from trainkit.plugin import ModelParams, register_model\n"
        "class P(ModelParams):\n"
        "    width: int = Field(4, ge=1)\n"
        "@register_model('tk_plugin_double', P)\n"
        "def build(params, input_shape, num_outputs):\n"
        "    '''A plugin model.'''\n"
        "    import torch.nn as nn\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0], num_outputs))\n"
    )
    raw = tiny_experiment(plugins=["tk_plugin_double"], model={"name": "tk_plugin_double"})
    raw["model"] = {"name": "tk_plugin_double", "width": 8}
    assert validate(raw, search=tmp_path).model.width == 8
    raw["model"]["widht"] = 3
    assert "did you mean 'width'?" in error_of(raw)
    schema = config_model().model_json_schema()
    assert "tk_plugin_double" in str(schema)


def test_a_module_beside_a_config_never_shadows_a_library_of_that_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `yaml.py` beside a config must not replace PyYAML for the rest of the run: the
    folders searched for plugins stay in front of sys.path only while plugins import."""
    import importlib
    import sys

    library = tmp_path / "site"
    library.mkdir()
    (library / "tk_lib.py").write_text("WHO = 'the library'\n")
    monkeypatch.syspath_prepend(str(library))
    project = tmp_path / "project"
    project.mkdir()
    (project / "tk_lib.py").write_text("WHO = 'a file beside the config'\n")
    (project / "tk_plugin_beside.py").write_text("X = 1\n")
    front = list(sys.path[:3])
    validate(tiny_experiment(plugins=["tk_plugin_beside"]), search=project)
    assert sys.path[:3] == front and str(project) in sys.path  # at the end, not in front
    assert importlib.import_module("tk_lib").WHO == "the library"
    assert importlib.import_module("tk_plugin_beside").X == 1


def test_a_plugin_that_fails_at_import_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "tk_plugin_broken.py").write_text("ratio = 1 / 0\n")
    with pytest.raises(UserError, match=r"importing 'tk_plugin_broken' raised ZeroDivisionError"):
        validate(tiny_experiment(plugins=["tk_plugin_broken"]))


def test_a_plugin_cannot_take_a_registered_name(tmp_path: Path) -> None:
    """Not even with a builder that happens to share the built-in's function name."""
    (tmp_path / "tk_plugin_clash.py").write_text(
        "from trainkit.plugin import register_model\n"
        "@register_model('lenet')\n"
        "def lenet(params, input_shape, num_outputs):\n"
        "    '''Not LeNet.'''\n"
    )
    with pytest.raises(UserError, match=r"model 'lenet' is already registered by trainkit\.models"):
        validate(tiny_experiment(plugins=["tk_plugin_clash"]))
    from trainkit.config.registry import MODELS

    assert MODELS.get("lenet").builder.__module__ == "trainkit.models.lenet"


def test_re_importing_a_plugin_registers_its_components_again(tmp_path: Path) -> None:
    import importlib
    import sys

    (tmp_path / "tk_plugin_again.py").write_text(
        "from trainkit.plugin import register_loss\n"
        "@register_loss('tk_again')\n"
        "def build(params, data):\n"
        "    '''A loss.'''\n"
    )
    from trainkit.config.registry import LOSSES

    raw = tiny_experiment(plugins=["tk_plugin_again"], loss={"name": "tk_again"})
    validate(raw)
    first = LOSSES.get("tk_again").builder
    del sys.modules["tk_plugin_again"]
    again = importlib.import_module("tk_plugin_again")  # the same function again: no clash
    assert LOSSES.get("tk_again").builder is again.build
    assert again.build is not first  # the registry holds the new module's function
    assert validate(raw).loss.name == "tk_again"


def test_sizes_must_be_positive() -> None:
    """A negative layer size would otherwise reach nn.Linear and end in a traceback."""
    message = error_of(tiny_experiment(model={"name": "mlp", "hidden": [16, -3]}))
    assert "model.hidden.1: Input should be greater than 0 (got -3)" in message
    shape = error_of(tiny_experiment(model={"name": "mlp", "input_shape": [0, 28]}))
    assert "model.input_shape.0: Input should be greater than 0" in shape
