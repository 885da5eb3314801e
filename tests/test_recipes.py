"""The recipe options: weight EMA, mixup and cutmix, per-image policies, flip TTA,
torch.compile without recompiles, and cifar_fast. Each resumes bit for bit."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from tests.disk_datasets import write_image_folder
from tests.helpers import NEVER, assert_same_run, misbehaving_loss, tiny_experiment
from trainkit.config.loading import CommandLine
from trainkit.config.schema import validate
from trainkit.data.mixing import BatchMixer
from trainkit.data.policies import SamplePolicy
from trainkit.errors import UserError
from trainkit.models.test_time import with_tta
from trainkit.training.build import build
from trainkit.training.checkpoint import read_payload
from trainkit.training.ema import averaged_weights, weight_average
from trainkit.training.resume import resume
from trainkit.training.run import train


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes, 16 training and 16 test images each, 20 pixels."""
    return write_image_folder(tmp_path_factory.mktemp("pets"), per_class=16, size=20)


def experiment(folder: Path, trainer: dict | None = None, **data: Any) -> dict[str, Any]:
    return tiny_experiment(
        model={"name": "cifar_fast", "widths": [8, 8, 16, 16]},
        data={"name": "image_folder", "root": str(folder), "image_size": 16, "batch_size": 8,
              "workers": 0, **data},
        trainer={"epochs": 3, **(trainer or {})},
        logging={"log_every_steps": 3, "tensorboard": False},
    )  # fmt: skip


def stopped_and_resumed(
    raw: dict[str, Any], tmp_path: Path, stop_at: int = 10, **resume_set: Any
) -> None:
    """Train `raw` whole, and again stopped by SIGTERM at loss call `stop_at` (epoch 2)
    and resumed (with `resume_set` changed); both must end bit for bit alike."""
    whole = {**raw, **misbehaving_loss(tmp_path, "sigterm", NEVER)}
    assert train(validate(whole), run_dir=tmp_path / "whole", quiet=True).status == "completed"
    cut = {**raw, **misbehaving_loss(tmp_path, "sigterm", stop_at)}
    stopped = train(validate(cut), run_dir=tmp_path / "cut", quiet=True)
    assert stopped.status == "interrupted" and 6 < stopped.step < 12  # inside epoch 2
    changes = [f"loss.at_call={NEVER}", *(f"{k}={v}" for k, v in resume_set.items())]
    assert resume(tmp_path / "cut", CommandLine(changes), quiet=True).status == "completed"
    assert_same_run(tmp_path / "whole", tmp_path / "cut")


# --- weight EMA ------------------------------------------------------------------------


def test_the_average_follows_the_formula_weights_and_batch_norm_statistics() -> None:
    """decay 0.5: the first update copies, then average = 0.5 x average + 0.5 x now."""
    net = nn.Sequential(nn.Linear(1, 1, bias=False), nn.BatchNorm1d(1))
    average = weight_average(net, decay=0.5)
    expected_weight, expected_mean = None, None
    for weight, mean in [(1.0, 10.0), (3.0, 20.0), (5.0, -4.0)]:
        with torch.no_grad():
            net[0].weight.fill_(weight)
            net[1].running_mean.fill_(mean)
        average.update_parameters(net)
        if expected_weight is None:
            expected_weight, expected_mean = weight, mean
        else:
            expected_weight = 0.5 * expected_weight + 0.5 * weight
            expected_mean = 0.5 * expected_mean + 0.5 * mean
        assert average.module[0].weight.item() == expected_weight
        assert average.module[1].running_mean.item() == expected_mean
    assert (expected_weight, expected_mean) == (3.5, 5.5)  # 1, 2, 3.5 and 10, 15, 5.5


def test_ema_true_is_the_default_decay_and_false_is_off() -> None:
    assert validate(tiny_experiment(trainer={"ema": True})).trainer.ema.decay == 0.999
    assert validate(tiny_experiment(trainer={"ema": False})).trainer.ema is None
    assert validate(tiny_experiment()).trainer.ema is None


def test_an_average_too_slow_for_the_run_is_a_warning(cli, write_config, tmp_path) -> None:
    """36 steps: 0.999 (half-life 693) keeps 96% of the first weights, 0.5 none of them."""
    for decay, warned in ((0.999, True), (0.5, False)):
        config = write_config(trainer={"ema": {"decay": decay}})
        result = cli("train", config, "--run-dir", tmp_path / str(decay))
        assert result.exit_code == 0, result.output
        said = " ".join(result.stderr.split())
        assert ("half-life of 693 steps, and this run takes 36" in said) is warned, said
        if warned:
            assert "carries 96% of the first weights" in said


def test_a_run_scores_and_serves_the_average(folder: Path, cli, tmp_path: Path) -> None:
    """Validation, the test score, eval and predict all use the averaged weights, which
    the checkpoint keeps beside the trained ones."""
    raw = experiment(folder, trainer={"ema": {"decay": 0.8}})
    result = train(validate(raw), run_dir=tmp_path / "run", quiet=True)
    payload = read_payload(tmp_path / "run" / "last.pt")
    averaged = averaged_weights(payload)
    assert averaged is not None and int(payload["ema"]["n_averaged"]) == result.step
    assert averaged.keys() == payload["model"].keys()
    assert not torch.equal(averaged["3.body.0.0.weight"], payload["model"]["3.body.0.0.weight"])

    scored = _eval(cli, tmp_path / "run" / "last.pt", tmp_path / "eval.json")
    assert scored["loss"] == pytest.approx(result.metrics["test/loss"], 1e-6)

    # The same config without the average, given the averaged weights, scores the same.
    experiment_ = build(validate({**raw, "trainer": {**raw["trainer"], "ema": None}}))
    experiment_.parts.model.load_state_dict(averaged)
    from trainkit.training.loop import evaluate

    plain = evaluate(experiment_.parts, experiment_.split_batches("test"))
    assert plain["loss"] == pytest.approx(result.metrics["test/loss"], 1e-6)

    # predict and export load the model the same way: with the average.
    from trainkit.inference.trained_model import load_trained_model

    served = load_trained_model(tmp_path / "run" / "last.pt").model.state_dict()
    assert all(torch.equal(served[k], v) for k, v in averaged.items())


def test_a_stopped_run_with_an_average_resumes_exactly(folder: Path, tmp_path: Path) -> None:
    stopped_and_resumed(experiment(folder, trainer={"ema": {"decay": 0.9}}), tmp_path)


# --- flip TTA --------------------------------------------------------------------------


def test_flip_tta_changes_nothing_for_a_mirror_symmetric_network() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    with torch.no_grad():  # kernels equal to their mirror images: flip in, flip out
        conv.weight.copy_((conv.weight + conv.weight.flip(-1)) / 2)
    net = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    images = torch.randn(5, 3, 8, 8)
    assert torch.allclose(with_tta(net, "flip")(images), net(images), atol=1e-6)
    assert with_tta(net, "none") is net


def test_eval_and_predict_average_exactly_two_passes(folder: Path, cli, tmp_path: Path) -> None:
    """An ordinary (not symmetric) network: eval's loss and predict's probabilities under
    tta flip are those of the mean of the logits of each image and its mirror."""
    run = tmp_path / "run"
    assert (
        cli("train", _config(tmp_path, experiment(folder)), "--run-dir", run, "-q").exit_code == 0
    )
    plain = _eval(cli, run, tmp_path / "plain.json")
    flipped = _eval(cli, run, tmp_path / "flipped.json", "--set", "trainer.tta=flip")
    assert plain["loss"] != flipped["loss"]

    experiment_ = build(validate(experiment(folder)), scoring_only=True)
    experiment_.parts.model.load_state_dict(read_payload(run / "best.pt")["model"])
    net = experiment_.parts.model.eval()
    losses, count = 0.0, 0
    with torch.no_grad():
        for images, targets in experiment_.split_batches("test").epoch():
            logits = (net(images) + net(images.flip(-1))) / 2
            losses += torch.nn.functional.cross_entropy(logits, targets, reduction="sum").item()
            count += len(targets)
    assert flipped["loss"] == pytest.approx(losses / count, rel=1e-5)

    # predict scores through TrainedModel, which averages the same two passes.
    from trainkit.inference.trained_model import load_trained_model

    plain_model = load_trained_model(run)
    flip_model = load_trained_model(run, command_line=CommandLine(["trainer.tta=flip"]))
    pixels = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    x = plain_model.transform(pixels, train=False)
    with torch.no_grad():
        expected = (plain_model.model(x) + plain_model.model(x.flip(-1))) / 2
    assert torch.equal(flip_model(pixels), expected)
    assert not torch.equal(plain_model(pixels), expected)
    images = folder / "test" / "cat"
    for tta in ("none", "flip"):
        out = tmp_path / f"{tta}.json"
        predicted = cli("predict", "--ckpt", run, images, "--out", out, "--tta", tta)
        assert predicted.exit_code == 0, predicted.output
    assert (tmp_path / "none.json").read_text() != (tmp_path / "flip.json").read_text()


def _eval(cli: Any, checkpoint: Path, out: Path, *options: str) -> dict[str, Any]:
    result = cli("eval", "--ckpt", checkpoint, "--out", out, *options)
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())


def _config(tmp_path: Path, raw: dict[str, Any], name: str = "experiment.yaml") -> Path:
    import yaml

    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    ("image_data", "change", "says"),
    [
        (False, "trainer.tta=flip", "tta=flip mirrors images, and data synthetic_logistic gives"),
        (False, "data.mixup=0.2", "data.mixup"),
        (True, "loss.name=mse", "which loss mse does not take; use loss cross_entropy"),
        (True, "data.mix_prob=0.5", "mix_prob only matters with data.mixup or data.cutmix"),
        (True, "data.augment=trivial", "trivialaugment"),
        (True, "trainer.compile=nonsense", "'nonsense' is not a torch.compile backend"),
    ],
)
def test_wrong_recipe_settings_are_refused_before_a_run_exists(
    folder: Path, cli, tmp_path: Path, image_data: bool, change: str, says: str
) -> None:
    raw = experiment(folder, mixup=0.2) if image_data else tiny_experiment()
    if change == "data.mix_prob=0.5":
        raw["data"].pop("mixup")
    result = cli("train", _config(tmp_path, raw), "--set", change, "--run-dir", tmp_path / "r")
    assert result.exit_code == 2, result.output
    assert says in " ".join(result.stderr.split()) and "Traceback" not in result.output
    assert not (tmp_path / "r").exists()


def test_tta_on_a_table_is_refused_by_the_config_before_the_file_is_looked_at() -> None:
    raw = tiny_experiment(
        data={"name": "table", "path": "nowhere.csv", "target": "y"}, trainer={"tta": "flip"}
    )
    with pytest.raises(UserError, match="tta=flip mirrors images, and data table gives none"):
        validate(raw)
    validate({**raw, "trainer": {"tta": "none"}})  # the missing file is not the config's


# --- mixup and cutmix ------------------------------------------------------------------


def _mixer(**options: Any) -> BatchMixer:
    settings = {"mixup": 0.0, "cutmix": 0.0, "prob": 1.0, "switch_prob": 0.5, **options}
    return BatchMixer(**settings, num_classes=5, seed=3)


def test_mixup_blends_each_image_with_its_neighbour_by_its_target_share() -> None:
    images = torch.randn(6, 3, 8, 8)
    labels = torch.tensor([0, 1, 2, 3, 4, 1])  # every neighbour of another class
    rng = torch.get_rng_state()
    mixed, targets = _mixer(mixup=0.4)(images, labels, 2, 7)
    assert torch.equal(torch.get_rng_state(), rng)  # the training's own draws never move
    assert torch.allclose(targets.sum(1), torch.ones(6))
    lam = targets[torch.arange(6), labels]
    assert torch.allclose(targets[torch.arange(6), labels.roll(1)], 1 - lam)
    assert (lam == lam[0]).all() and 0 < lam[0] < 1  # one share for the batch
    expected = lam[0] * images + (1 - lam[0]) * images.roll(1, 0)
    assert torch.allclose(mixed, expected, atol=1e-6)
    again, _ = _mixer(mixup=0.4)(images, labels, 2, 7)
    assert torch.equal(again, mixed)  # a function of (seed, epoch, batch)
    other, _ = _mixer(mixup=0.4)(images, labels, 2, 8)
    assert not torch.equal(other, mixed)


def test_cutmix_pastes_a_box_whose_area_is_the_other_targets_share() -> None:
    images = torch.randn(6, 3, 16, 16)
    labels = torch.tensor([0, 1, 2, 3, 4, 1])
    for batch in range(5):
        mixed, targets = _mixer(mixup=1.0, cutmix=1.0, switch_prob=1.0)(images, labels, 0, batch)
        pasted = (mixed == images.roll(1, 0)).all(1) & (mixed != images).any(1)
        assert ((mixed == images).all(1) | pasted).all()  # each pixel from one of the two
        share = pasted.float().mean((1, 2))
        assert torch.allclose(targets[torch.arange(6), labels.roll(1)], share)
        assert torch.allclose(targets.sum(1), torch.ones(6))


def test_mix_prob_zero_leaves_batches_alone_with_one_hot_targets() -> None:
    images, labels = torch.randn(4, 3, 8, 8), torch.tensor([1, 2, 3, 4])
    mixed, targets = _mixer(mixup=1.0, prob=0.0)(images, labels, 0, 0)
    assert torch.equal(mixed, images)
    assert torch.equal(targets, torch.nn.functional.one_hot(labels, 5).float())


def test_a_stopped_run_with_mixup_and_cutmix_resumes_exactly(folder: Path, tmp_path: Path) -> None:
    raw = experiment(folder, mixup=0.4, cutmix=1.0, mix_prob=0.8)
    raw["loss"] = {"name": "cross_entropy", "label_smoothing": 0.1}
    stopped_and_resumed(raw, tmp_path)


# --- per-image policies ----------------------------------------------------------------


def photo_like(count: int, size: int = 16) -> torch.Tensor:
    """uint8 images with smooth gradients and flat areas (what equalize and autocontrast
    act on differently from noise), each different."""
    ramp = torch.linspace(0, 1, size)
    images = []
    for i in range(count):
        g = torch.Generator().manual_seed(i)
        low, high = sorted(torch.randint(0, 256, (2,), generator=g).tolist())
        image = low + (high - low) * (ramp[None, :] * ramp[:, None])[None].expand(3, -1, -1)
        image = image + torch.randint(0, 12, (3, size, size), generator=g)
        images.append(image.clamp(0, 255).to(torch.uint8))
    return torch.stack(images)


@pytest.mark.parametrize("name", ["randaugment", "trivialaugment", "autoaugment"])
def test_a_policy_gives_the_pixels_of_torchvisions_policy_called_on_each_image(
    name: str,
) -> None:
    """A batch augmented at once equals torchvision's policy called on each image with
    the global generator seeded by (seed, epoch, sample): the same draws, and the same
    pixels from the operations applied to groups. 96 images, so every operation is
    drawn, and under randaugment's fixed magnitude most are applied in groups."""
    from torchvision.transforms import v2

    from trainkit.data.seeding import derived_seed

    images, samples = photo_like(96), list(range(1000, 1096))
    ours = SamplePolicy(name, seed=3).batch(images, 2, samples)
    policy = {"randaugment": v2.RandAugment, "trivialaugment": v2.TrivialAugmentWide,
              "autoaugment": v2.AutoAugment}[name]()  # fmt: skip
    theirs = []
    with torch.random.fork_rng(devices=[]):
        for image, sample in zip(images, samples, strict=True):
            torch.manual_seed(derived_seed("policy", 3, 2, sample))
            theirs.append(policy(image))
    assert torch.equal(ours, torch.stack(theirs))
    assert (ours != images).flatten(1).any(1).float().mean() > 0.5  # it does augment


@pytest.mark.parametrize("name", ["randaugment", "trivialaugment", "autoaugment"])
def test_policy_draws_are_a_function_of_seed_epoch_and_image(name: str) -> None:
    images = photo_like(6)
    policy = SamplePolicy(name, seed=1)
    rng = torch.get_rng_state()
    batch = policy.batch(images, 4, [10, 11, 12, 13, 14, 15])
    assert torch.equal(torch.get_rng_state(), rng)
    alone = policy.batch(images[2:3], 4, [12])[0]
    assert torch.equal(batch[2], alone)  # the same draw, whatever else is in the batch
    epochs = [policy.batch(images[:1], epoch, [10])[0] for epoch in range(8)]
    assert len({e.numpy().tobytes() for e in epochs}) > 2  # a new draw most epochs
    other_seed = SamplePolicy(name, 2).batch(images, 4, [10, 11, 12, 13, 14, 15])
    assert not torch.equal(batch, other_seed)


@pytest.mark.slow
def test_a_policy_trains_alike_in_memory_and_streamed_and_resumes_with_any_workers(
    folder: Path, tmp_path: Path
) -> None:
    """trivialaugment in memory, and streamed with 2 workers stopped in epoch 2 and
    resumed with none: bit for bit the same run."""
    raw = experiment(folder, augment="trivialaugment")
    train(
        validate({**raw, "data": {**raw["data"], "in_memory": True}}),
        run_dir=tmp_path / "memory",
        quiet=True,
    )
    streamed = {**raw, "data": {**raw["data"], "in_memory": False, "workers": 2}}
    stopped_and_resumed(streamed, tmp_path, **{"data.workers": 0})
    assert_same_run(tmp_path / "memory", tmp_path / "cut")


# --- torch.compile ---------------------------------------------------------------------


@pytest.fixture
def recompiles() -> Any:
    """The recompilations torch's own log reports, as they happen."""
    seen: list[str] = []

    class Recorder(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "Recompiling" in record.getMessage():
                seen.append(record.getMessage())

    handler = Recorder()
    torch._logging.set_logs(recompiles=True)
    log = logging.getLogger("torch._dynamo")  # the recompiles artifact reaches this one
    log.addHandler(handler)
    yield seen
    log.removeHandler(handler)
    torch._logging.set_logs()
    torch._dynamo.reset()


@pytest.mark.slow
def test_compile_recompiles_nothing_after_the_first_epoch(
    folder: Path, tmp_path: Path, recompiles: list[str]
) -> None:
    """With a weight average and flip TTA, epochs of 43 training samples in batches of 8
    (the last one 3), 5 validation samples and a test split scored in batches of 47 and 1:
    one epoch without the test score recompiles as often as three epochs with it."""
    raw = experiment(
        folder,
        trainer={"compile": "eager", "ema": {"decay": 0.9}, "tta": "flip", "test_at_end": False},
        eval_batch_size=47,
    )
    counts = []
    for epochs, test in ((1, False), (3, True)):
        torch._dynamo.reset()
        recompiles.clear()
        config = {**raw, "trainer": {**raw["trainer"], "epochs": epochs, "test_at_end": test}}
        result = train(validate(config), run_dir=tmp_path / f"e{epochs}", quiet=True)
        assert result.status == "completed"
        counts.append(len(recompiles))
    assert counts[0] > 0  # the log is read: evaluation is a graph of its own
    assert counts[0] == counts[1], "\n".join(recompiles)
