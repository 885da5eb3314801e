from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.disk_datasets import CIFAR_CLASSES, write_cifar10, write_image_folder, write_mnist
from tests.helpers import tiny_experiment
from trainkit.config.registry import DATASETS
from trainkit.config.schema import validate
from trainkit.data.batching import BatchPlan, BatchTransform, PadCrop
from trainkit.data.memory import DeviceBatches, Split, hold_out
from trainkit.errors import UserError


def build(data: dict, seed: int = 0):
    config = validate(tiny_experiment(data=data))
    return DATASETS.build(config.data, seed)


@pytest.fixture
def cifar_md5_bypass(monkeypatch: pytest.MonkeyPatch) -> None:
    """torchvision checks CIFAR files against the original download's md5; fixtures cannot match."""
    import torchvision.datasets.cifar as cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path))


def test_mnist_is_read_by_torchvision_from_idx_files(tmp_path: Path) -> None:
    write_mnist(tmp_path, n_train=100, n_test=30)
    data = build({"name": "mnist", "root": str(tmp_path), "val_fraction": 0.2})
    assert (len(data.train), len(data.val), len(data.test)) == (80, 20, 30)
    assert data.train.inputs.dtype == torch.uint8
    assert tuple(data.train.inputs.shape[1:]) == (1, 28, 28)
    assert data.info.num_classes == 10 and data.info.input_shape == (1, 28, 28)
    assert data.mean == (0.1307,)


def test_a_download_waits_for_one_under_way_in_the_same_root(tmp_path: Path) -> None:
    """Processes that start together (torchrun's ranks, a sweep's trials) must not write
    the same files at once: while another holds the root's download lock, a run waits."""
    import fcntl
    import threading

    write_mnist(tmp_path, n_train=20, n_test=10)
    built = []
    with (tmp_path / ".download.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        reader = threading.Thread(
            target=lambda: built.append(
                build({"name": "mnist", "root": str(tmp_path), "download": True})
            )
        )
        reader.start()
        reader.join(timeout=1.0)
        assert reader.is_alive() and not built
    reader.join(timeout=30)
    assert len(built) == 1 and len(built[0].test) == 10


def test_a_failed_download_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No half-written files, no lock file, no folder it had to make; what was there stays."""
    from torchvision.datasets import MNIST

    monkeypatch.setattr(MNIST, "mirrors", ["http://127.0.0.1:9/"])  # refused at once
    with pytest.raises(UserError, match="the download failed"):
        build({"name": "mnist", "root": str(tmp_path / "new" / "data"), "download": True})
    assert not (tmp_path / "new").exists()
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "mine.txt").write_text("keep me")
    with pytest.raises(UserError, match="the download failed"):
        build({"name": "mnist", "root": str(tmp_path / "old"), "download": True})
    assert [p.name for p in (tmp_path / "old").rglob("*")] == ["mine.txt"]


def test_pixels_can_stay_in_the_unit_interval(tmp_path: Path) -> None:
    """standardize: false feeds pixels / 255, as Nielsen's networks take them."""
    write_mnist(tmp_path, n_train=20, n_test=10)
    for standardize, mean, std in ((True, 0.1307, 0.3081), (False, 0.0, 1.0)):
        data = build({"name": "mnist", "root": str(tmp_path), "standardize": standardize})
        transform = BatchTransform(torch.device("cpu"), mean=data.mean, std=data.std)
        pixels = transform(data.test.inputs, train=False)
        expected = (data.test.inputs.float() / 255 - mean) / std
        torch.testing.assert_close(pixels, expected)


def test_mnist_missing_files_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"data\.download=true"):
        build({"name": "mnist", "root": str(tmp_path / "empty")})


def test_cifar10_is_read_by_torchvision_from_pickles(
    tmp_path: Path, cifar_md5_bypass: None
) -> None:
    write_cifar10(tmp_path, per_batch=10, n_test=20)
    data = build({"name": "cifar10", "root": str(tmp_path)})
    assert len(data.train) + len(data.val) == 50
    assert len(data.test) == 20
    assert tuple(data.train.inputs.shape[1:]) == (3, 32, 32)
    assert data.info.class_names == tuple(CIFAR_CLASSES)
    assert data.augment


def test_validation_split_is_seeded_and_disjoint() -> None:
    split = Split(torch.arange(100), torch.arange(100))
    a_train, a_val = hold_out(split, 0.2, seed=1)
    _, b_val = hold_out(split, 0.2, seed=1)
    _, c_val = hold_out(split, 0.2, seed=2)
    assert torch.equal(a_val.inputs, b_val.inputs)
    assert not torch.equal(a_val.inputs, c_val.inputs)
    assert set(a_train.inputs.tolist()).isdisjoint(a_val.inputs.tolist())
    assert len(a_train) + len(a_val) == 100


def test_synthetic_sets_are_deterministic_per_seed() -> None:
    first = build({"name": "synthetic_linear"}, seed=5)
    again = build({"name": "synthetic_linear"}, seed=5)
    other = build({"name": "synthetic_linear"}, seed=6)
    assert torch.equal(first.train.inputs, again.train.inputs)
    assert not torch.equal(first.train.inputs, other.train.inputs)
    assert first.info.num_classes is None and first.train.targets.shape[1] == 1
    # y = 2x + 3 + noise: least squares recovers the defaults
    x = torch.cat([first.train.inputs, torch.ones(len(first.train), 1)], dim=1)
    w = torch.linalg.lstsq(x, first.train.targets).solution.flatten()
    assert w[0] == pytest.approx(2.0, abs=0.1) and w[1] == pytest.approx(3.0, abs=0.1)
    logistic = build({"name": "synthetic_logistic", "n_features": 3})
    assert set(logistic.train.targets.unique().tolist()) == {0, 1}
    assert logistic.info.input_shape == (3,)


def test_image_folder_decodes_once_then_reads_the_cache(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_image_folder(tmp_path / "decoded-once")  # a name no other test's folder has
    params = {"name": "image_folder", "root": str(root), "image_size": 16, "workers": 0}
    data = build(params)
    assert data.info.class_names == ("cat", "dog", "owl")
    assert tuple(data.train.inputs.shape[1:]) == (3, 16, 16)
    assert len(data.train) + len(data.val) == 18 and len(data.test) == 18
    cache_home = Path(os.environ["XDG_CACHE_HOME"]) / "trainkit" / "image_folder"
    caches = list(cache_home.glob("decoded-once-*.pt"))
    assert (
        len(caches) == 1 and f"cached the decoded images in {caches[0]}" in capsys.readouterr().out
    )
    assert not (root / ".trainkit-cache").exists()  # nothing written into the dataset
    # A cached read gives the same tensors even when the images are gone ...
    os.utime(caches[0])
    again = build(params)
    assert torch.equal(again.train.inputs, data.train.inputs)
    assert f"read the decoded images from the cache {caches[0]}" in capsys.readouterr().out
    # ... a changed file invalidates it, and another folder of the same files has its own.
    twin = write_image_folder(tmp_path / "decoded-twin")
    assert len(build({**params, "root": str(twin)}).test) == 18
    assert len(list(cache_home.glob("decoded-twin-*.pt"))) == 1
    (root / "train" / "cat" / "0.png").unlink()
    assert len(build(params).train) + len(build(params).val) == 17


def test_image_folder_without_splits_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "flat").mkdir()
    with pytest.raises(UserError, match="has no train/ folder"):
        build({"name": "image_folder", "root": str(tmp_path / "flat")})


def test_batches_cover_the_split_in_a_resumable_order() -> None:
    split = Split(torch.arange(10).float().unsqueeze(1), torch.arange(10))
    transform = BatchTransform(torch.device("cpu"))
    batches = DeviceBatches(split, BatchPlan(10, 4, shuffle=True, seed=7), transform)
    assert len(batches) == 3
    epoch0 = [t.tolist() for _, t in batches.epoch(0)]
    assert sorted(i for batch in epoch0 for i in batch) == list(range(10))
    assert [t.tolist() for _, t in batches.epoch(0, start=1)] == epoch0[1:]
    assert epoch0 != [t.tolist() for _, t in batches.epoch(1)]
    assert len(BatchPlan(10, 4, shuffle=True, drop_last=True)) == 2
    evaluation = DeviceBatches(split, BatchPlan(10, 4, shuffle=False), transform)
    assert torch.cat([t for _, t in evaluation.epoch()]).tolist() == list(range(10))
    # two ranks take halves of the same global batches: together, one rank's batches
    ranks = [BatchPlan(10, 2, shuffle=True, seed=7, rank=r, world_size=2) for r in (0, 1)]
    single = BatchPlan(10, 4, shuffle=True, seed=7)
    order = single.order(0)
    for b in range(len(single)):
        shares = [plan.positions(plan.order(0), b) for plan in ranks]
        assert torch.cat(shares).tolist() == single.positions(order, b).tolist()


def test_augmentation_crops_and_flips_on_the_batch(tmp_path: Path, cifar_md5_bypass: None) -> None:
    write_cifar10(tmp_path, per_batch=4, n_test=4)
    data = build({"name": "cifar10", "root": str(tmp_path)})
    transform = BatchTransform(
        torch.device("cpu"), seed=0, mean=data.mean, std=data.std, augment=PadCrop()
    )
    images = data.train.inputs[:8]
    plain = transform(images, train=False)
    augmented = transform(images, train=True)
    assert augmented.shape == plain.shape and augmented.dtype == torch.float32
    assert not torch.equal(plain, augmented)
    # normalized with CIFAR-10's statistics
    expected = (images[0, 0, 0, 0] / 255 - 0.4914) / 0.2470
    assert plain[0, 0, 0, 0].item() == pytest.approx(expected.item(), rel=1e-5)
    # the generator state makes augmentation replayable
    state = transform.state_dict()
    first = transform(images, train=True)
    transform.load_state_dict(state)
    assert torch.equal(first, transform(images, train=True))


def test_each_augmented_image_is_a_padded_crop_possibly_flipped() -> None:
    import torch.nn.functional as F

    images = torch.randint(1, 256, (16, 3, 8, 8), dtype=torch.uint8)
    identity = BatchTransform(
        torch.device("cpu"),
        mean=(0.0, 0.0, 0.0),
        std=(1 / 255, 1 / 255, 1 / 255),  # so normalized values equal the raw pixels
        augment=PadCrop(),
    )
    augmented = identity(images, train=True)
    padded = F.pad(images, (4, 4, 4, 4)).float()
    shifted = 0
    for image, source in zip(augmented, padded, strict=True):
        crops = [source[:, y : y + 8, x : x + 8] for y in range(9) for x in range(9)]
        matches = [c for c in crops if torch.equal(c, image) or torch.equal(c.flip(2), image)]
        assert matches, "not a crop of the padded image"
        shifted += not torch.equal(image, source[:, 4:12, 4:12])
    assert shifted > 8  # most images moved or flipped


def test_image_folder_decoded_by_workers_or_cached_gives_the_same_run(tmp_path: Path) -> None:
    """Over 256 images are decoded in worker processes. Decoding must not draw from the
    global RNG: a run that decoded the images and one that read the cache end alike."""
    from trainkit.training.checkpoint import read_payload
    from trainkit.training.run import train

    root = write_image_folder(tmp_path / "many", per_class=50, size=12)  # 150 + 150 images
    data = {"name": "image_folder", "root": str(root), "image_size": 16, "batch_size": 32}
    by_workers = build({**data, "workers": 2, "cache_dir": str(tmp_path / "a")})
    in_process = build({**data, "workers": 0, "cache_dir": str(tmp_path / "b")})
    assert len(by_workers.train) + len(by_workers.val) == 150
    assert torch.equal(by_workers.train.inputs, in_process.train.inputs)
    assert torch.equal(by_workers.test.targets, in_process.test.targets)

    config = validate(
        tiny_experiment(
            model={"name": "lenet"},
            data={**data, "workers": 2, "cache_dir": str(tmp_path / "c")},
            trainer={"epochs": 1},
        )
    )
    train(config, run_dir=tmp_path / "decoded", quiet=True)
    train(config, run_dir=tmp_path / "cached", quiet=True)
    first, second = (
        read_payload(tmp_path / run / "last.pt")["model"] for run in ("decoded", "cached")
    )
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_an_unreadable_image_in_the_folder_is_named(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "pets", per_class=2)
    (root / "train" / "dog" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(UserError, match=r"1 image\(s\) cannot be read: .*broken\.png"):
        build({"name": "image_folder", "root": str(root), "workers": 0})


@pytest.mark.parametrize(("settings", "shift"), [({}, 2), ({"max_shift": 1}, 1)])
def test_mnist_augment_shifts_digits_by_up_to_max_shift_without_flipping(
    tmp_path: Path, settings: dict, shift: int
) -> None:
    from trainkit.data.batching import augmentation

    write_mnist(tmp_path, n_train=20, n_test=5)
    plain = build({"name": "mnist", "root": str(tmp_path)})
    assert augmentation(plain) is None
    shifted = build({"name": "mnist", "root": str(tmp_path), "augment": True, **settings})
    assert augmentation(shifted) == PadCrop(padding=shift, flip=False)
    identity = BatchTransform(torch.device("cpu"), augment=augmentation(shifted))
    images = shifted.train.inputs[:8]
    padded = torch.nn.functional.pad(images, (shift,) * 4)
    moved = 0
    span = range(2 * shift + 1)
    for image, source in zip(identity(images, train=True), padded, strict=True):
        windows = [source[:, y : y + 28, x : x + 28] for y in span for x in span]
        assert any(torch.equal(image, w) for w in windows)  # a shift, never a mirror image
        moved += not torch.equal(image, source[:, shift : shift + 28, shift : shift + 28])
    assert moved >= 4


def test_a_read_only_dataset_folder_trains_and_is_cached_elsewhere(
    small_disk, cli, write_config, tmp_path: Path
) -> None:
    import subprocess

    disk = small_disk(2048)
    root = write_image_folder(disk / "pets", per_class=4, size=12)
    remounted = subprocess.run(["mount", "-o", "remount,ro", str(disk)], capture_output=True)
    if remounted.returncode != 0:
        pytest.skip(f"cannot make the tmpfs read-only here: {remounted.stderr!r}")
    raw = {"name": "image_folder", "root": str(root), "image_size": 8, "workers": 0}
    config = write_config(model={"name": "mlp"}, data=raw, trainer={"epochs": 1})
    result = cli("train", config, "--run-dir", tmp_path / "run")
    assert result.exit_code == 0, result.output
    cache_home = Path(os.environ["XDG_CACHE_HOME"]) / "trainkit" / "image_folder"
    assert f"cached the decoded images in {cache_home}" in result.stdout
    assert "warning" not in result.stderr


@pytest.mark.parametrize(
    "per_class", [4, pytest.param(700, marks=pytest.mark.slow)]
)  # 12 and 2,100 training images
def test_in_memory_and_streamed_folders_normalize_alike_on_both_sides_of_the_sample(
    tmp_path: Path, per_class: int
) -> None:
    """The statistics come from the same images whichever path is taken: all of a
    small folder's, STATS_SAMPLE spread evenly through a larger one."""
    from trainkit.data import image_data

    root = write_image_folder(tmp_path / f"stats-{per_class}", per_class=per_class, size=8)
    params = {"name": "image_folder", "root": str(root), "image_size": 8, "workers": 0}
    memory = build({**params, "in_memory": True})
    streamed = build({**params, "in_memory": False})
    assert memory.mean == streamed.mean and memory.std == streamed.std
    every = build({**params, "in_memory": True, "cache_dir": str(tmp_path / "c")})
    full = torch.cat([every.train.inputs, every.val.inputs])
    all_images = image_data._channel_stats(full)  # the training split, val included
    if 3 * per_class <= image_data.STATS_SAMPLE:
        assert memory.mean == pytest.approx(tuple(all_images["mean"]), abs=1e-6)
    else:
        assert len(image_data.stats_sample(3 * per_class)) <= image_data.STATS_SAMPLE
        assert memory.mean != pytest.approx(tuple(all_images["mean"]), abs=1e-9)
