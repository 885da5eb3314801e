"""train, eval, resume, validate, ls and schema through the real CLI (in-process)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.helpers import tiny_experiment
from trainkit.training.checkpoint import read_payload


def run_dirs(root: Path) -> list[Path]:
    return sorted(p for p in (root / "checkpoints" / "tiny").iterdir() if p.is_dir())


def test_train_writes_a_complete_run_directory(cli, write_config, tmp_path: Path) -> None:
    result = cli("train", write_config(checkpoint={"monitor": "val/accuracy"}))
    assert result.exit_code == 0, result.output
    [run] = run_dirs(tmp_path)
    names = {p.name for p in run.iterdir()}
    assert {"config.yaml", "last.pt", "best.pt", "metrics.jsonl"} <= names
    assert {
        "epoch_0002.pt",
        "epoch_0003.pt",
    } <= names and "epoch_0001.pt" not in names  # keep_last 2
    assert any(run.glob("events.out.tfevents.*"))  # TensorBoard names the run by its folder
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    epoch_ends = [r for r in records if "val/loss" in r]
    assert [r["epoch"] for r in epoch_ends] == [1, 2, 3]
    assert {"train/loss", "val/accuracy", "lr", "samples_per_sec", "epoch_time"} <= set(
        epoch_ends[-1]
    )
    assert epoch_ends[-1]["val/accuracy"] > 0.85  # the synthetic classes are separable: it learned
    checkpoint = read_payload(run / "last.pt")
    assert checkpoint["config"]["trainer"]["epochs"] == 3
    assert checkpoint["state"]["epoch"] == 3
    assert set(checkpoint["versions"]) >= {"torch", "torchvision", "trainkit", "python"}
    assert "plugins: []" in (run / "config.yaml").read_text()
    first, second, *_, summary, where = result.stdout.splitlines()
    shown = run.relative_to(tmp_path)  # checkpoints/tiny/<run-id>, as the user sees it
    assert first == f"training tiny in {shown}: model mlp (82 parameters) on cpu (fp32)"
    assert second == "data: synthetic_logistic, in memory; 12 batches of 32 samples per epoch"
    # the final scores go to stdout with the rest, so `trainkit train x > log` keeps them
    assert summary.startswith("completed: 3 epochs, 36 steps  val/loss ")
    assert "test/accuracy" in summary and where == f"run directory: {shown}"
    assert result.stderr == ""
    # plain lines, not a progress bar, when stdout is not a terminal
    assert "epoch 3/3 done" in result.stdout


def test_quiet_prints_nothing_on_stdout(cli, write_config) -> None:
    result = cli("train", write_config(), "--quiet")
    assert result.exit_code == 0
    assert result.stdout == "" and result.stderr == ""
    one = cli("train", write_config(trainer={"epochs": 1}))
    assert "completed: 1 epoch, 12 steps" in one.stdout


def test_version_and_a_misspelt_kind(cli) -> None:
    from trainkit import __version__

    assert cli("--version").stdout == f"trainkit {__version__}\n"
    wrong = cli("ls", "model")
    assert wrong.exit_code == 2 and "did you mean 'models'?" in wrong.stderr


@pytest.mark.slow
def test_a_closed_stdout_stops_the_printing_not_the_run(write_config, tmp_path: Path) -> None:
    """`trainkit train x | head -2`: the run goes on to the end after head has gone."""
    import subprocess
    import sys

    config = write_config(trainer={"epochs": 3}, logging={"log_every_steps": 1})
    command = [
        sys.executable,
        "-m",
        "trainkit",
        "train",
        str(config),
        "--run-dir",
        str(tmp_path / "run"),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None
    head = [process.stdout.readline() for _ in range(2)]
    process.stdout.close()  # what head does after two lines
    assert process.wait(timeout=120) == 0, process.stderr.read() if process.stderr else ""
    assert head[0].startswith(b"training tiny")
    assert read_payload(tmp_path / "run" / "last.pt")["state"]["epoch"] == 3
    assert b"Traceback" not in (process.stderr.read() if process.stderr else b"")


def test_eval_scores_a_checkpoint_and_writes_json(cli, write_config, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert cli("train", write_config(), "--run-dir", run, "-q").exit_code == 0
    out = tmp_path / "scores" / "test.json"
    missing = cli("eval", "--ckpt", run / "last.pt", "--out", out)
    assert (
        missing.exit_code == 2
        and "the folder" in missing.stderr
        and "does not exist" in missing.stderr
    )
    assert not out.parent.exists()  # a typo in a folder is not turned into new folders
    out.parent.mkdir()
    result = cli("eval", "--ckpt", run / "last.pt", "--out", out)
    assert result.exit_code == 0, result.output
    assert "per-class accuracy" in result.stdout
    scores = json.loads(out.read_text())
    assert scores["split"] == "test" and scores["samples"] == 100
    assert 0.85 < scores["accuracy"] <= 1.0
    assert len(scores["per_class_accuracy"]) == 2
    val = json.loads(
        (
            cli("eval", "--ckpt", run, "--split", "val", "--out", out).exit_code == 0 and out
        ).read_text()
    )
    assert val["split"] == "val" and val["samples"] == 40
    assert val["checkpoint"].endswith("best.pt")  # a run directory means its best checkpoint
    # the same final validation and test scores the training run logged
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    last_val = [r for r in records if "val/loss" in r][-1]
    (test,) = [r for r in records if "test/loss" in r]
    assert scores["epoch"] == 3
    assert cli("eval", "--ckpt", run / "last.pt", "--split", "val", "--out", out).exit_code == 0
    assert json.loads(out.read_text())["loss"] == pytest.approx(last_val["val/loss"], rel=1e-9)
    assert cli("eval", "--ckpt", run / "last.pt", "--out", out).exit_code == 0
    final_test = json.loads(out.read_text())
    assert final_test["loss"] == pytest.approx(test["test/loss"], rel=1e-9)
    assert final_test["accuracy"] == test["test/accuracy"]


def test_resume_continues_and_can_extend(cli, write_config, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert cli("train", write_config(), "--run-dir", run, "-q").exit_code == 0
    finished = cli("resume", run)
    assert finished.exit_code == 2
    assert "already finished 3 of 3 epochs" in finished.stderr
    extended = cli("resume", run, "--set", "trainer.epochs=5", "-q")
    assert extended.exit_code == 0, extended.output
    assert "re-planned" in extended.stderr
    assert read_payload(run / "last.pt")["state"]["epoch"] == 5
    assert "epochs: 5" in (run / "config.yaml").read_text()  # the run says what it ran


def test_resume_of_a_missing_path_is_an_error_not_a_fresh_start(cli, tmp_path: Path) -> None:
    result = cli("resume", tmp_path / "no-such-run")
    assert result.exit_code == 2
    assert "nothing to resume" in result.stderr
    assert not (tmp_path / "checkpoints").exists()


def test_bad_config_exits_2_without_traceback_or_files(cli, write_config, tmp_path: Path) -> None:
    path = write_config(model={"name": "lenett"}, optimizer={"name": "sgd", "lr": 0})
    for command in ("train", "validate"):
        result = cli(command, path)
        assert result.exit_code == 2
        assert "Traceback" not in result.output
        assert "did you mean 'lenet'?" in result.stderr
        assert "optimizer.lr" in result.stderr
    assert not (tmp_path / "checkpoints").exists()


def test_set_overrides_apply_to_train_and_validate(cli, write_config, tmp_path: Path) -> None:
    path = write_config()
    result = cli("validate", path, "--set", "optimizer.lr=0.02", "--set", "trainer.epochs=1")
    assert result.exit_code == 0
    assert "lr: 0.02" in result.stdout and "epochs: 1" in result.stdout
    bad = cli("train", path, "--set", "optimizer.lr=fast")
    assert bad.exit_code == 2 and "optimizer.lr" in bad.stderr
    ok = cli("train", path, "--set", "trainer.epochs=1", "--run-dir", tmp_path / "r", "-q")
    assert ok.exit_code == 0
    assert read_payload(tmp_path / "r" / "last.pt")["config"]["trainer"]["epochs"] == 1


def test_run_dir_that_holds_files_is_never_overwritten(cli, write_config, tmp_path: Path) -> None:
    run = tmp_path / "taken"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    result = cli("train", write_config(), "--run-dir", run)
    assert result.exit_code == 2 and "is not empty and holds no trainkit run" in result.stderr
    assert [p.name for p in run.iterdir()] == ["notes.txt"]


def test_ls_lists_components_with_parameters(cli) -> None:
    result = cli("ls", "models")
    assert result.exit_code == 0
    for name in ("mlp", "lenet", "resnet34", "linear", "logistic"):
        assert name in result.stdout
    assert "hidden: list[int] = [100]" in result.stdout
    everything = cli("ls").stdout
    for kind in ("datasets", "optimizers", "schedulers", "losses"):
        assert kind in everything
    assert cli("ls", "widgets").exit_code == 2


def test_ls_and_schema_include_plugins(cli, tmp_path: Path) -> None:
    (tmp_path / "tk_ls_plugin.py").write_text(
        "from trainkit.plugin import register_loss\n"
        "@register_loss('tk_ls_loss')\n"
        "def build(params, data):\n"
        '    """A loss from a plugin."""\n'
    )
    listed = cli("ls", "losses", "--plugin", "tk_ls_plugin")
    assert listed.exit_code == 0
    assert "tk_ls_loss" in listed.stdout and "A loss from a plugin." in listed.stdout
    assert '"tk_ls_loss"' in cli("schema", "--plugin", "tk_ls_plugin").stdout
    missing = cli("ls", "--plugin", "tk_no_such_plugin")
    assert missing.exit_code == 2 and "cannot import 'tk_no_such_plugin'" in missing.stderr
    # a key given to a component without parameters is named as such
    config = tmp_path / "plugged.yaml"
    loss = {"name": "tk_ls_loss", "smoothing": 0.1}
    config.write_text(yaml.safe_dump(tiny_experiment(plugins=["tk_ls_plugin"], loss=loss)))
    wrong = cli("validate", config)
    assert wrong.exit_code == 2
    assert "loss: unknown key 'smoothing'; tk_ls_loss takes no parameters" in wrong.stderr


def test_schema_is_json_with_every_component(cli) -> None:
    result = cli("schema")
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    text = json.dumps(schema)
    for name in ("resnet34", "image_folder", "onecycle", "rmsprop", "bce"):
        assert f'"{name}"' in text
    assert "trainer" in schema["properties"]


@pytest.mark.slow
def test_python_dash_m_and_help(cli) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "trainkit", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("train", "resume", "eval", "validate", "ls", "schema"):
        assert command in result.stdout


def test_eval_of_a_regression_run_reports_loss_only(cli, write_config, tmp_path: Path) -> None:
    config = write_config(
        model={"name": "linear"},
        data={"name": "synthetic_linear", "n_train": 200, "n_test": 50},
        loss={"name": "mse"},
        optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.0},
        scheduler=None,
        trainer={"epochs": 20},
    )
    assert cli("train", config, "--run-dir", tmp_path / "run", "-q").exit_code == 0
    out = tmp_path / "scores.json"
    result = cli("eval", "--ckpt", tmp_path / "run" / "last.pt", "--out", out)
    assert result.exit_code == 0, result.output
    scores = json.loads(out.read_text())
    assert scores["accuracy"] is None and scores["per_class_accuracy"] is None
    assert 0 < scores["loss"] < 1.0  # noise variance is 0.25: the line was learned
    assert "accuracy" not in result.stdout
    # y = 2x + 3: the learned line is printed, and written out, without torch.load
    assert "learned parameters" in result.stdout and "1.weight" in result.stdout
    [[weight]], [bias] = scores["parameters"]["1.weight"], scores["parameters"]["1.bias"]
    assert weight == pytest.approx(2.0, abs=0.1) and bias == pytest.approx(3.0, abs=0.1)


@pytest.mark.slow
def test_validate_ls_and_schema_do_not_import_torch() -> None:
    """--help loads Typer alone; validate, ls and schema add the schema but never torch."""
    import subprocess
    import sys

    config = Path(__file__).parents[1] / "configs" / "cifar_resnet.yaml"
    schema_only = ("torch", "torchvision")
    for args, unwanted in (
        (["validate", str(config)], schema_only),
        (["ls"], schema_only),
        (["schema"], schema_only),
        (["--help"], (*schema_only, "pydantic", "rich", "yaml")),
    ):
        probe = (
            "import runpy, sys\n"
            f"sys.argv = ['trainkit', *{args!r}]\n"
            "try:\n"
            "    runpy.run_module('trainkit', run_name='__main__')\n"
            "except SystemExit as exit:\n"
            "    assert not exit.code, exit.code\n"
            f"heavy = sorted(m for m in {unwanted!r} if m in sys.modules)\n"
            "assert not heavy, heavy\n"
        )
        result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
        assert result.returncode == 0, (args, result.stderr[-2000:])


def test_messages_carry_no_terminal_escape_codes(cli, write_config, tmp_path: Path) -> None:
    """A library's coloured error text (torch.onnx's, for one) arrives as plain text."""
    (tmp_path / "tk_coloured.py").write_text(
        "from trainkit.plugin import UserError, register_model\n"
        "@register_model('tk_coloured')\n"
        "def build(params, input_shape, num_outputs):\n"
        "    '''Fails in colour.'''\n"
        "    raise UserError('this is \\x1b[96mstep 3/3\\x1b[0m of nothing')\n"
    )
    config = write_config(plugins=["tk_coloured"], model={"name": "tk_coloured"})
    result = cli("train", config)
    assert result.exit_code == 2
    assert "this is step 3/3 of nothing" in result.stderr and "\x1b" not in result.stderr


def test_output_paths_are_checked_before_any_work(cli, write_config, tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("mine")
    under_a_file = cli("train", write_config(), "--run-dir", tmp_path / "a_file" / "run")
    assert under_a_file.exit_code == 2 and "is a file, not a folder" in under_a_file.stderr
    root = cli("train", write_config(), "--set", f"checkpoint.runs_dir={tmp_path / 'a_file'}")
    assert (
        root.exit_code == 2 and "checkpoint.runs_dir" in root.stderr and "is a file" in root.stderr
    )
    assert cli("train", write_config(), "--run-dir", tmp_path / "run", "-q").exit_code == 0
    folder = cli("eval", "--ckpt", tmp_path / "run", "--out", tmp_path / "run")
    assert folder.exit_code == 2 and "is a folder" in folder.stderr
    assert (tmp_path / "a_file").read_text() == "mine"


def test_a_bug_is_reported_as_one_with_its_traceback_kept(
    cli, write_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception trainkit did not expect is not blamed on the input: exit 1, not 2,
    and the traceback in a file whose path is printed."""
    import trainkit.training.checkpoint as checkpoint

    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    assert cli("train", write_config(), "--run-dir", tmp_path / "run", "-q").exit_code == 0

    def broken(path):
        raise ZeroDivisionError("an internal mistake")

    monkeypatch.setattr(checkpoint, "read_payload", broken)
    result = cli("eval", "--ckpt", tmp_path / "run")
    assert result.exit_code == 1
    message = result.stderr
    assert "unexpected ZeroDivisionError: an internal mistake" in message
    assert "bug in trainkit" in message and "Traceback" not in message
    [kept] = (tmp_path / "tmp").glob("trainkit-crash-*.txt")
    assert str(kept) in message.replace("\n", "")
    assert "Traceback" in kept.read_text()
    assert "ZeroDivisionError: an internal mistake" in kept.read_text()


@pytest.mark.slow
def test_exit_handlers_run_although_the_process_ends_at_once(write_config, tmp_path: Path) -> None:
    """The fast exit skips only the teardown of modules: a plugin's atexit handler runs."""
    import subprocess
    import sys

    (tmp_path / "tk_at_exit.py").write_text(
        "import atexit\n"
        "from pathlib import Path\n"
        "atexit.register(lambda: Path('exited.txt').write_text('bye'))\n"
    )
    config = write_config(plugins=["tk_at_exit"], trainer={"epochs": 1})
    done = subprocess.run(
        [sys.executable, "-m", "trainkit", "train", str(config), "--run-dir", "run", "-q"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "exited.txt").read_text() == "bye"


@pytest.mark.slow
def test_every_command_treats_a_closed_stdout_alike(write_config, tmp_path: Path) -> None:
    """`trainkit X | head -1`: the reader leaves, the command still does its work and
    exits with that work's code (0 here), without a traceback or a message."""
    import subprocess
    import sys

    def trainkit(*args: object) -> subprocess.CompletedProcess[bytes]:
        command = [sys.executable, "-m", "trainkit", *map(str, args)]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert process.stdout is not None and process.stderr is not None
        process.stdout.readline()
        process.stdout.close()  # what head -1 does
        err = process.stderr.read()
        return subprocess.CompletedProcess(command, process.wait(timeout=120), b"", err)

    config = write_config(trainer={"epochs": 2})
    assert trainkit("train", config, "--run-dir", tmp_path / "run").returncode == 0
    (tmp_path / "rows.csv").write_text("a,b\n" + "0.5,1.0\n" * 200)
    rows = ["predict", "--ckpt", tmp_path / "run", tmp_path / "rows.csv"]
    commands = {
        "ls": ["ls"],
        "validate": ["validate", config],
        "schema": ["schema"],
        "runs": ["runs", tmp_path],
        "eval": ["eval", "--ckpt", tmp_path / "run"],
        "predict": [*rows, "--show", 200],
        "predict --out": [*rows, "--out", tmp_path / "p.csv"],
    }
    for name, args in commands.items():
        done = trainkit(*args)
        assert done.returncode == 0, (name, done.stderr[-2000:])
        assert b"Traceback" not in done.stderr and b"error" not in done.stderr, name
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 201  # written all the same


def test_ls_reads_at_80_columns(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pipe or a narrow terminal gets one key a line, descriptions wrapped under it."""
    monkeypatch.setenv("COLUMNS", "80")
    listed = cli("ls").stdout.splitlines()
    assert max(len(line) for line in listed) <= 80
    assert not any(mark in "".join(listed) for mark in "┃│┏━")  # no table to wrap
    assert "  mlp: Fully connected network on the flattened input." in listed
    assert "    hidden: list[int] = [100]" in listed
    # A wrapped three-column table took over 5 lines a key; a list takes about 3.
    keys = [line for line in listed if line.startswith("    ") and not line.startswith("     ")]
    assert len(listed) < 3.5 * len(keys)
