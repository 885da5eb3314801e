"""Fine-tuning: init_from, freeze, and torchvision architectures with their own weights."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.disk_datasets import write_cifar10, write_image_folder
from tests.helpers import NEVER, assert_same_run, misbehaving_loss, tiny_experiment
from trainkit.config.schema import validate
from trainkit.errors import UserError
from trainkit.training.build import build, seed_process
from trainkit.training.checkpoint import read_payload
from trainkit.training.run import train
from trainkit.training.warm_start import load_initial_weights


@pytest.fixture
def source_run(tmp_path: Path) -> Path:
    """An MLP trained with two logits (cross-entropy); its hidden layers fit a new task
    with another head, here one logit (BCE)."""
    config = tiny_experiment(
        model={"name": "mlp", "hidden": [16, 8]},
        data={"name": "synthetic_logistic", "n_features": 4},
        trainer={"epochs": 1},
    )
    train(validate(config), run_dir=tmp_path / "source", quiet=True)
    return tmp_path / "source"


def one_logit_config(**model: object) -> dict:
    return tiny_experiment(
        model={"name": "mlp", "hidden": [16, 8], "num_classes": 1, **model},
        data={"name": "synthetic_logistic", "n_features": 4},
        loss={"name": "bce"},
        trainer={"epochs": 2},
    )


def test_init_from_a_checkpoint_loads_what_fits_and_reports_the_rest(
    cli, write_config, source_run: Path, tmp_path: Path
) -> None:
    config = write_config(one_logit_config(init_from=str(source_run / "last.pt")))
    result = cli("train", config, "--run-dir", tmp_path / "tuned")
    assert result.exit_code == 0, result.output
    assert "init_from" in result.stdout and "loaded 4 tensors (1 (2), 3 (2))" in result.stdout
    assert "newly initialized: 5.weight, 5.bias" in result.stdout
    assert (
        "not loaded, shape differs: 5.weight [2, 8] vs [1, 8], 5.bias [2] vs [1]" in result.stdout
    )
    # The loaded layers started from the source's weights: build, load, compare.
    config = validate(one_logit_config(init_from=str(source_run / "last.pt")))
    module = build(config).parts.model
    load_initial_weights(module, source_run / "last.pt")
    source = read_payload(source_run / "last.pt")["model"]
    assert torch.equal(module.state_dict()["1.weight"], source["1.weight"])
    assert torch.equal(module.state_dict()["3.bias"], source["3.bias"])


def test_init_from_safetensors_and_plain_state_dicts(source_run: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    source = read_payload(source_run / "last.pt")["model"]
    save_file(source, tmp_path / "w.safetensors")
    torch.save({f"module.{k}": v for k, v in source.items()}, tmp_path / "ddp.pt")  # a DDP prefix
    torch.save({"state_dict": source}, tmp_path / "wrapped.pt")
    module = build(validate(one_logit_config())).parts.model
    for name in ("w.safetensors", "ddp.pt", "wrapped.pt"):
        report = load_initial_weights(module, tmp_path / name)
        assert report.loaded == ["1.weight", "1.bias", "3.weight", "3.bias"], name
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(UserError, match="cannot be read as weights"):
        load_initial_weights(module, tmp_path / "junk.pt")
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(UserError, match=r"none of the 1 tensors .* match"):
        load_initial_weights(module, tmp_path / "other.pt")


@pytest.mark.slow
def test_freeze_keeps_parameters_and_batchnorm_statistics_fixed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchvision.datasets.cifar as cifar
    from torchvision.ops import FrozenBatchNorm2d

    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path))
    root = write_cifar10(tmp_path / "cifar", per_batch=8, n_test=8)
    config = validate(
        tiny_experiment(
            model={"name": "resnet34", "freeze": ["conv1", "bn1", "layer1"]},
            data={"name": "cifar10", "root": str(root), "batch_size": 8},
            trainer={"epochs": 1},
        )
    )
    seed_process(config)  # as a run does: the weights it starts from
    experiment = build(config)
    module = experiment.parts.model
    assert isinstance(module.bn1, FrozenBatchNorm2d) and isinstance(
        module.layer2[0].bn1, torch.nn.BatchNorm2d
    )
    trainable = {
        id(p) for group in experiment.parts.optimizer.param_groups for p in group["params"]
    }
    assert all((id(p) in trainable) == p.requires_grad for p in module.parameters())
    before = {k: v.clone() for k, v in module.state_dict().items()}
    train(config, run_dir=tmp_path / "run", quiet=True)
    after = read_payload(tmp_path / "run" / "last.pt")["model"]
    for name in before:
        frozen = name.split(".")[0] in ("conv1", "bn1", "layer1")
        if frozen or "num_batches_tracked" in name:
            continue
        assert not torch.equal(before[name], after[name]) or not before[name].is_floating_point(), (
            name
        )
    for name in before:
        if name.split(".")[0] in ("conv1", "bn1", "layer1"):
            assert torch.equal(before[name], after[name]), name  # weights and running stats
    with pytest.raises(UserError, match="no parameter is under 'layer9'"):
        build(validate(tiny_experiment(model={"name": "mlp", "freeze": ["layer9"]})))
    everything = tiny_experiment(model={"name": "mlp", "hidden": [4], "freeze": ["1", "3"]})
    with pytest.raises(UserError, match="nothing would be trained"):
        build(validate(everything))


def test_a_fine_tuned_run_stopped_mid_epoch_resumes_exactly(
    source_run: Path, tmp_path: Path
) -> None:
    """init_from and freeze, stopped by SIGTERM at step 17 (not a log or checkpoint
    boundary), then resumed: the same weights, optimizer state and metrics.jsonl."""
    from trainkit.config.loading import CommandLine
    from trainkit.training.resume import resume

    def experiment(stop_at: int) -> dict:
        config = one_logit_config(init_from=str(source_run / "last.pt"), freeze=["1"])
        config.update(misbehaving_loss(tmp_path, "sigterm", stop_at))
        config["model"]["num_classes"] = None  # two logits again, for cross-entropy
        config["trainer"]["epochs"] = 3
        config["logging"] = {"log_every_steps": 5, "tensorboard": False}
        return config

    train(validate(experiment(NEVER)), run_dir=tmp_path / "whole", quiet=True)
    # Loss calls: the start-up probe, 12 steps of epoch 1, its 2 validation batches, then
    # epoch 2: call 20 is step 17, inside epoch 2 and between log and checkpoint points.
    stopped = train(validate(experiment(20)), run_dir=tmp_path / "cut", quiet=True)
    assert stopped.status == "interrupted" and stopped.step == 17
    (tmp_path / "source" / "last.pt").unlink()  # resume never reads init_from again
    resume(tmp_path / "cut", CommandLine([f"loss.at_call={NEVER}"]), quiet=True)
    assert_same_run(tmp_path / "whole", tmp_path / "cut")


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A TORCH_HOME holding 'pretrained' resnet18 weights that this test wrote itself."""
    import torchvision

    from trainkit.models.torchvision_zoo import weights_file

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    path = weights_file(torchvision.models.ResNet18_Weights.IMAGENET1K_V1)
    path.parent.mkdir(parents=True)
    torch.manual_seed(123)
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


def test_torchvision_weights_bring_their_preprocessing(torch_home: Path, tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "pets")
    config = validate(
        tiny_experiment(
            model={"name": "torchvision", "arch": "resnet18", "weights": "DEFAULT"},
            data={"name": "image_folder", "root": str(root)},
        )
    )
    assert (config.data.image_size, config.data.resize) == (224, 256)
    assert config.data.mean == [0.485, 0.456, 0.406] and config.data.std == [0.229, 0.224, 0.225]
    own = validate(
        tiny_experiment(
            model={"name": "torchvision", "arch": "resnet18", "weights": "DEFAULT"},
            data={"name": "image_folder", "root": str(root), "image_size": 64, "mean": [0.5] * 3},
        )
    )
    assert (own.data.image_size, own.data.resize, own.data.mean) == (64, 256, [0.5] * 3)


@pytest.mark.slow
def test_fine_tune_a_torchvision_arch_from_a_local_weights_file(
    cli, write_config, torch_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_image_folder(tmp_path / "pets", per_class=4)
    model = {"name": "torchvision", "arch": "resnet18", "weights": "DEFAULT", "freeze": ["layer1"]}
    data = {"name": "image_folder", "root": str(root), "image_size": 48, "resize": 56}
    config = write_config(
        tiny_experiment(
            model=model, data={**data, "workers": 0, "batch_size": 6}, trainer={"epochs": 1}
        )
    )
    result = cli("train", config, "--run-dir", tmp_path / "run")
    assert result.exit_code == 0, result.output
    # layer1's BatchNorm weights became buffers of FrozenBatchNorm2d: 512 fewer parameters
    assert (
        "model torchvision resnet18 (DEFAULT weights) (11,177,539 parameters, 11,030,083 trainable)"
        in result.stdout
    )
    pretrained = torch.load(torch_home, weights_only=True)
    tuned = read_payload(tmp_path / "run" / "last.pt")["model"]
    assert tuned["fc.weight"].shape == (3, 512)  # a new head for three classes
    for name in ("layer1.0.conv1.weight", "layer1.1.bn2.running_mean"):
        assert torch.equal(tuned[name], pretrained[name])  # loaded, then frozen
    # Using the tuned model needs neither the pretrained file nor the image folder.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    predicted = cli("predict", "--ckpt", tmp_path / "run", root / "test" / "owl")
    assert predicted.exit_code == 0, predicted.output
    exported = cli("export", "--ckpt", tmp_path / "run", "--format", "safetensors")
    assert exported.exit_code == 0, exported.output


def test_weights_that_are_not_cached_offline_are_a_clear_error(
    cli, write_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from urllib.error import URLError

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))

    def offline(url: str, dst: str, *args: object, **kwargs: object) -> None:
        raise URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    root = write_image_folder(tmp_path / "pets", per_class=2)
    config = write_config(
        model={"name": "torchvision", "arch": "resnet18", "weights": "IMAGENET1K_V1"},
        data={"name": "image_folder", "root": str(root), "workers": 0},
    )
    result = cli("train", config)
    assert result.exit_code == 2 and "Traceback" not in result.output
    expected = tmp_path / "empty" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert "not in torchvision's cache" in result.stderr
    assert f"put it at {expected}" in result.stderr.replace("\n", "")
    assert not (tmp_path / "checkpoints").exists()
    assert "scanning" not in result.stdout  # said before any image was read


def test_what_can_be_checked_without_the_data_is_checked_first(
    cli, write_config, tmp_path: Path
) -> None:
    """A run directory that is taken, or an init_from file that is missing, is refused
    before the dataset is scanned or decoded (or a cache written)."""
    root = write_image_folder(tmp_path / "checked_first", per_class=2)
    data = {"name": "image_folder", "root": str(root), "workers": 0}
    config = write_config(model={"name": "lenet"}, data=data)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("mine")
    cases = {
        "--run-dir taken": (["--run-dir", tmp_path / "taken"], "holds no trainkit run"),
        "init_from missing": (["--set", "model.init_from=nope.pt"], "no such file"),
    }
    for options, expected in cases.values():
        result = cli("train", config, *options)
        assert result.exit_code == 2 and expected in result.stderr, result.output
        assert "scanning" not in result.stdout
    cache = Path(os.environ["XDG_CACHE_HOME"]) / "trainkit" / "image_folder"
    assert not list(cache.glob("checked_first-*"))  # nothing was decoded
    assert (tmp_path / "taken" / "mine.txt").read_text() == "mine"


def test_torchvision_names_are_checked_with_suggestions(cli, write_config, tmp_path: Path) -> None:
    typo = cli("validate", write_config(model={"name": "torchvision", "arch": "resnet19"}))
    assert typo.exit_code == 2 and "did you mean 'resnet18'?" in typo.stderr
    assert "torchvision.models.list_models" in typo.stderr
    weights = cli(
        "validate",
        write_config(model={"name": "torchvision", "arch": "resnet18", "weights": "IMAGENET_V1"}),
    )
    assert weights.exit_code == 2 and "did you mean 'IMAGENET1K_V1'?" in weights.stderr
    root = write_image_folder(tmp_path / "pets", per_class=2)
    small = write_config(
        model={"name": "torchvision", "arch": "vit_b_16"},
        data={"name": "image_folder", "root": str(root), "image_size": 32, "workers": 0},
    )
    refused = cli("train", small)
    assert refused.exit_code == 2 and "cannot take inputs of shape (3, 32, 32)" in refused.stderr
