"""metrics.jsonl and TensorBoard: one history, arranged for each reader."""

from __future__ import annotations

import json
from pathlib import Path

from trainkit.training.metrics_log import read_records, tensorboard_tag


def test_tensorboard_opens_on_loss_and_accuracy_with_hparams_in_their_tab(
    cli, write_config, tmp_path: Path
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    assert cli("train", write_config(), "--run-dir", tmp_path / "run", "-q").exit_code == 0
    events = EventAccumulator(str(tmp_path / "run"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert tags == {
        "accuracy/train",
        "accuracy/val",
        "accuracy/test",
        "loss/train",
        "loss/train_steps",
        "loss/val",
        "loss/test",
        "lr",
        "timing/epoch_time",
        "timing/epoch_samples_per_sec",
        "timing/samples_per_sec",
    }
    # The dashboard sorts groups by name: train and val curves first, then lr, then timing.
    assert sorted({tag.split("/")[0] for tag in tags}) == ["accuracy", "loss", "lr", "timing"]
    # Epoch means and the every-5-steps loss are separate curves (12 steps an epoch).
    assert [e.step for e in events.Scalars("loss/train")] == [12, 24, 36]
    assert [e.step for e in events.Scalars("loss/train_steps")] == list(range(5, 36, 5))
    # The settings and final scores are in the HParams tab, not as scalar charts.
    content = events.PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    metrics = {m.name.tag for m in experiment.experiment.metric_infos}
    assert {"loss/val", "accuracy/val", "accuracy/test", "loss/train"} <= metrics
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    assert session.session_start_info.hparams["optimizer.lr"].number_value == 0.1
    assert not any(tag.startswith("hparam") for tag in tags)


def test_every_record_has_a_scope_even_in_old_files(tmp_path: Path) -> None:
    records = [
        {"step": 5, "epoch": 1, "train/loss": 0.5, "lr": 0.1},
        {"step": 12, "epoch": 1, "train/loss": 0.4, "epoch_time": 1.0, "val/loss": 0.3},
        {"step": 12, "epoch": 1, "test/loss": 0.3},
    ]
    (tmp_path / "metrics.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in records) + '{"step": 13, "cut sh'
    )
    assert [r["scope"] for r in read_records(tmp_path)] == ["interval", "epoch", "test"]
    assert tensorboard_tag("val/accuracy", "epoch") == "accuracy/val"
    assert tensorboard_tag("samples_per_sec", "epoch") == "timing/epoch_samples_per_sec"


def test_tensorboard_names_each_run_by_its_folder(cli, write_config, tmp_path: Path) -> None:
    """`tensorboard --logdir checkpoints` lists runs as <name>/<run-id>; a run written
    before the events moved out of tb/ keeps writing there when it is resumed."""
    from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer

    for name in ("alpha", "beta"):
        config = write_config(name=f"{name}.yaml", trainer={"epochs": 2})
        assert cli("train", config, "--set", f"name={name}", "-q").exit_code == 0
    runs = EventMultiplexer().AddRunsFromDirectory(str(tmp_path / "checkpoints"))
    names = sorted(runs.Runs())
    assert [n.split("/")[0] for n in names] == ["alpha", "beta"]
    assert all(len(n.split("/")) == 2 for n in names)  # <name>/<run-id>, nothing after
    old = next((tmp_path / "checkpoints" / "alpha").iterdir())
    (old / "tb").mkdir()
    for events in old.glob("events.out.tfevents.*"):
        events.rename(old / "tb" / events.name)
    assert cli("resume", old, "--set", "trainer.epochs=3", "-q").exit_code == 0
    assert not list(old.glob("events.out.tfevents.*"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    resumed = EventAccumulator(str(old / "tb"))
    resumed.Reload()
    assert [e.step for e in resumed.Scalars("loss/train")] == [12, 24, 36]
