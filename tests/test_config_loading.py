"""Configs from configs: base files, --set and --unset, and switching components."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.helpers import tiny_experiment
from trainkit.config.loading import CommandLine, apply_command_line, load_config
from trainkit.config.schema import to_dict, validate
from trainkit.errors import UserError


def overridden(raw: dict, sets: list[str], unsets: list[str] | None = None) -> dict:
    return apply_command_line(raw, CommandLine(sets, unsets or []), [])


def write(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def test_overrides_are_dotted_and_yaml_typed() -> None:
    raw = overridden(
        tiny_experiment(),
        ["optimizer.lr=0.5", "trainer.epochs=7", "model.hidden=[8, 4]", "scheduler=null"],
    )
    config = validate(raw)
    assert config.optimizer.lr == 0.5
    assert config.trainer.epochs == 7
    assert config.model.hidden == [8, 4]
    assert config.scheduler is None
    assert validate(overridden(raw, ["scheduler.name=step"])).scheduler.name == "step"


@pytest.mark.parametrize("override", ["optimizer.lr", "=3", "name.x=1"])
def test_malformed_overrides_are_user_errors(override: str) -> None:
    with pytest.raises(UserError, match="--set"):
        overridden(tiny_experiment(), [override])


def test_unset_gives_a_key_its_default_back() -> None:
    raw = tiny_experiment(loss={"name": "cross_entropy", "label_smoothing": 0.2})
    assert validate(overridden(raw, [], ["loss.label_smoothing"])).loss.label_smoothing == 0.0
    assert validate(overridden(raw, [], ["scheduler"])).scheduler is None
    # --unset comes first, so a section can be emptied and set afresh
    fresh = overridden(raw, ["loss.name=mse"], ["loss"])
    assert fresh["loss"] == {"name": "mse"}
    with pytest.raises(UserError, match=r"--unset loss\.smoothing: the config does not set"):
        overridden(raw, [], ["loss.smoothing"])


def test_a_file_builds_on_its_bases(tmp_path: Path) -> None:
    write(tmp_path / "common" / "base.yaml", tiny_experiment(trainer={"epochs": 5}))
    write(tmp_path / "common" / "fast.yaml", {"trainer": {"epochs": 2}, "data": {"batch_size": 64}})
    child = write(
        tmp_path / "exp" / "child.yaml",
        {
            "base": ["../common/base.yaml", "../common/fast.yaml"],
            "name": "child",
            "optimizer": {"lr": 0.3},
            "model": {"hidden": [4]},  # a list is replaced, not merged
        },
    )
    config = load_config(child)
    assert config.name == "child"
    assert config.trainer.epochs == 2  # the later base wins
    assert config.data.batch_size == 64 and config.data.n_train == 400  # merged key by key
    assert config.optimizer.lr == 0.3 and config.optimizer.momentum == 0.9
    assert config.model.hidden == [4]
    assert "base" not in to_dict(config)  # what a run saves stands on its own
    one = write(tmp_path / "exp" / "one.yaml", {"base": "../common/base.yaml", "seed": 9})
    assert load_config(one).seed == 9  # a single base as a string


def test_base_cycles_and_missing_bases_name_the_chain(tmp_path: Path) -> None:
    a = write(tmp_path / "a.yaml", {"base": "b.yaml", "name": "a"})
    write(tmp_path / "b.yaml", {"base": "a.yaml"})
    with pytest.raises(UserError, match=r"cycle: .*a\.yaml -> .*b\.yaml -> .*a\.yaml"):
        load_config(a)
    c = write(tmp_path / "c.yaml", {"base": "d.yaml"})
    write(tmp_path / "d.yaml", {"base": "missing.yaml"})
    with pytest.raises(UserError, match=r"base 'missing.yaml' not found .*c\.yaml -> .*d\.yaml"):
        load_config(c)


def test_switching_a_component_drops_what_it_does_not_take(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """configs/mnist_mlp.yaml switched to the quadratic cost of Nielsen's network."""
    path = Path(__file__).parents[1] / "configs" / "mnist_mlp.yaml"
    config = load_config(path, CommandLine(["loss.name=mse", "model.output_activation=sigmoid"]))
    assert config.loss.name == "mse"
    warning = capsys.readouterr().err
    assert "loss: --set loss.name=mse chose mse instead of cross_entropy" in warning
    assert "dropped label_smoothing, which mse does not take" in warning
    # a child file's switch is the same, and a key it sets itself is still checked
    base = write(tmp_path / "base.yaml", tiny_experiment(loss={"label_smoothing": 0.1}))
    child = write(tmp_path / "child.yaml", {"base": base.name, "loss": {"name": "mse"}})
    assert load_config(child).loss.name == "mse"
    typo = write(
        tmp_path / "typo.yaml", {"base": base.name, "loss": {"name": "mse", "smoothing": 1}}
    )
    with pytest.raises(UserError, match=r"loss: unknown key 'smoothing'.* Allowed here: reduction"):
        load_config(typo)
    # parameters the new component shares are kept
    model = load_config(base, CommandLine(["model.name=lenet", "data.name=mnist"])).model
    assert model.name == "lenet" and model.input_shape is None


def test_an_error_from_the_command_line_says_so(tmp_path: Path) -> None:
    path = write(tmp_path / "exp.yaml", tiny_experiment())
    with pytest.raises(UserError) as caught:
        load_config(path, CommandLine(["optimizer.lr=-1"]))
    message = str(caught.value)
    assert (
        "optimizer.lr: Input should be greater than 0 (got -1) (from --set optimizer.lr=-1)."
        in message
    )
    assert "Fix the --set/--unset options or the file" in message
    with pytest.raises(UserError) as from_file:
        load_config(write(tmp_path / "bad.yaml", tiny_experiment(optimizer={"lr": -1})))
    assert "(from --set" not in str(from_file.value) and "Fix the file" in str(from_file.value)


def test_unreadable_and_huge_inputs_give_short_errors(tmp_path: Path) -> None:
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(UserError, match="is not a text file"):
        load_config(binary)
    huge = write(tmp_path / "huge.yaml", tiny_experiment(optimizer={"lr": ["x" * 100] * 2_000}))
    with pytest.raises(UserError) as caught:
        load_config(huge)
    assert len(str(caught.value)) < 1000
    assert "characters)" in str(caught.value)


def test_yaml_syntax_error_has_a_position(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nmodel: {name: mlp\n")
    with pytest.raises(UserError, match=r"not valid YAML at line \d+, column \d+"):
        load_config(path)
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_renamed_keys_are_read_under_their_new_names_with_a_warning(
    cli, write_config, tmp_path: Path
) -> None:
    raw = tiny_experiment(
        model={"num_classes": 2},
        trainer={"eval_every": 2},
        checkpoint={"root": str(tmp_path / "runs")},
    )
    result = cli("validate", write_config(raw))
    assert result.exit_code == 0, result.output
    resolved = yaml.safe_load(result.stdout)
    assert resolved["model"]["num_outputs"] == 2 and "num_classes" not in resolved["model"]
    assert resolved["trainer"]["eval_every_epochs"] == 2
    assert resolved["checkpoint"]["runs_dir"] == str(tmp_path / "runs")
    for old, new in [
        ("model.num_classes", "model.num_outputs"),
        ("trainer.eval_every", "trainer.eval_every_epochs"),
        ("checkpoint.root", "checkpoint.runs_dir"),
    ]:
        assert f"{old} is now called {new}" in result.stderr
    # on the command line too, over a file that uses the new name
    fresh = write_config(tiny_experiment(trainer={"eval_every_epochs": 5}), name="new.yaml")
    result = cli("validate", fresh, "--set", "trainer.eval_every=3")
    assert yaml.safe_load(result.stdout)["trainer"]["eval_every_epochs"] == 3
    assert "--set trainer.eval_every=3: trainer.eval_every is now called" in result.stderr
    result = cli("validate", fresh, "--unset", "trainer.eval_every")
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout)["trainer"]["eval_every_epochs"] == 1  # the default


def test_an_old_base_file_merges_with_a_child_that_uses_the_new_name(tmp_path: Path) -> None:
    write(tmp_path / "base.yaml", tiny_experiment(trainer={"epochs": 2, "eval_every": 4}))
    child = write(
        tmp_path / "child.yaml", {"base": "base.yaml", "trainer": {"eval_every_epochs": 2}}
    )
    config = load_config(child)
    assert config.trainer.eval_every_epochs == 2 and config.trainer.epochs == 2


def test_a_key_under_both_names_is_refused(cli, write_config) -> None:
    both = tiny_experiment(trainer={"eval_every": 2, "eval_every_epochs": 3})
    result = cli("validate", write_config(both))
    assert result.exit_code == 2
    assert "sets both trainer.eval_every and trainer.eval_every_epochs" in result.stderr


def test_a_stored_config_with_old_names_is_read_without_a_word(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from trainkit.config.loading import resolve

    stored = tiny_experiment(model={"num_classes": 2}, checkpoint={"root": "runs"})
    config = resolve(stored, CommandLine(["trainer.eval_every_epochs=2"]), "a stored config")
    assert config.model.num_outputs == 2 and config.checkpoint.runs_dir == "runs"
    assert config.trainer.eval_every_epochs == 2
    assert stored["model"]["num_classes"] == 2  # the caller's dict is left as it was
    assert "now called" not in capsys.readouterr().err
