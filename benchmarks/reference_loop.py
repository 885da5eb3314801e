"""The loop a user would write by hand, to measure what trainkit costs on top of it.

It trains the job a trainkit config describes (same model, data split, batch size,
optimizer, schedule, precision and memory format) the way the tutorials do: the data as
tensors in memory, a shuffled index per epoch, forward, loss, backward, step. Like
`trainkit train` it evaluates the validation split after every epoch, saves a checkpoint
(model and optimizer) after every epoch and scores the test split at the end, so both
processes do the same work. It reads only the config's values, never trainkit's code.

    python benchmarks/reference_loop.py configs/mnist_lenet.yaml --data-root DATA_ROOT

prints one JSON line: the time of every epoch (training only), the test accuracy, and
the settings it ran with.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch import Tensor, nn

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def mlp(hidden: list[int], inputs: int, classes: int) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    for width in hidden:
        layers += [nn.Linear(inputs, width), nn.ReLU()]
        inputs = width
    return nn.Sequential(*layers, nn.Linear(inputs, classes))


def lenet(channels: int, size: int, classes: int) -> nn.Module:
    pad = 2 if size == 28 else 0  # MNIST digits are padded to LeNet's 32x32
    side = ((size + 2 * pad - 4) // 2 - 4) // 2
    return nn.Sequential(
        nn.Conv2d(channels, 6, 5, padding=pad),
        nn.MaxPool2d(2),
        nn.ReLU(),
        nn.Conv2d(6, 16, 5),
        nn.MaxPool2d(2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * side * side, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, classes),
    )


def resnet34(channels: int, classes: int) -> nn.Module:
    from torchvision.models.resnet import BasicBlock, ResNet

    net = ResNet(BasicBlock, [3, 4, 6, 3], num_classes=classes)
    net.conv1 = nn.Conv2d(channels, 64, 3, stride=1, padding=1, bias=False)  # 32x32 images
    net.maxpool = nn.Identity()
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    return net


def build_model(config: dict[str, Any], shape: tuple[int, ...], classes: int) -> nn.Module:
    name = config["name"]
    if name == "mlp":
        return mlp(config.get("hidden", [100]), math.prod(shape), classes)
    if name == "lenet":
        return lenet(shape[0], shape[1], classes)
    if name == "resnet34":
        return resnet34(shape[0], classes)
    raise SystemExit(f"reference_loop: no hand-written model for {name!r}")


def load_data(config: dict[str, Any], seed: int, root: str | None) -> dict[str, Any]:
    """uint8 images (N, C, H, W) or float features, with labels, for train and test."""
    name = config["name"]
    if name == "mnist":
        from torchvision.datasets import MNIST

        train, test = (MNIST(root or config["root"], train=t, download=False) for t in (1, 0))
        return {
            "train": (train.data.unsqueeze(1), train.targets),
            "test": (test.data.unsqueeze(1), test.targets),
            "mean": [MNIST_MEAN],
            "std": [MNIST_STD],
        }
    if name == "image_folder":
        from torchvision import transforms
        from torchvision.datasets import ImageFolder

        size = config.get("image_size", 32)
        resize = transforms.Compose([transforms.Resize((size, size)), transforms.PILToTensor()])

        def read(folder: Path) -> tuple[Tensor, Tensor]:
            tree = ImageFolder(str(folder), transform=resize)
            images = torch.stack([image for image, _ in tree])
            return images, torch.tensor(tree.targets)

        base = Path(root or config["root"])
        train_images, train_labels = read(base / "train")
        scaled = train_images.float().div(255)
        return {
            "train": (train_images, train_labels),
            "test": read(base / "test"),
            "mean": scaled.mean(dim=(0, 2, 3)).tolist(),
            "std": scaled.std(dim=(0, 2, 3)).tolist(),
        }
    if name == "synthetic_logistic":
        n_train, n_test = config.get("n_train", 1000), config.get("n_test", 200)
        generator = torch.Generator().manual_seed(seed)
        x = torch.randn(n_train + n_test, config.get("n_features", 2), generator=generator)
        normal = torch.randn(x.shape[1], generator=generator)
        score = x @ normal + config.get("noise", 0.1) * torch.randn(len(x), generator=generator)
        y = (score > 0).long()
        return {"train": (x[:n_train], y[:n_train]), "test": (x[n_train:], y[n_train:])}
    raise SystemExit(f"reference_loop: no hand-written reader for dataset {name!r}")


def random_crop_flip(images: Tensor, pad: int = 4) -> Tensor:
    """Each image shifted by up to `pad` pixels (zero fill) and flipped half the time."""
    n, _, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    dy, dx = torch.randint(0, 2 * pad + 1, (2, n, 1), device=images.device)
    rows = (dy + torch.arange(h, device=images.device))[:, None, :, None]
    cols = (dx + torch.arange(w, device=images.device))[:, None, None, :]
    padded = padded.gather(2, rows.expand(-1, padded.shape[1], -1, padded.shape[3]))
    cropped = padded.gather(3, cols.expand(-1, padded.shape[1], h, -1))
    flip = torch.rand(n, 1, 1, 1, device=images.device) < 0.5
    return torch.where(flip, cropped.flip(3), cropped)


def make_optimizer(config: dict[str, Any], model: nn.Module) -> torch.optim.Optimizer:
    lr, decay = config["lr"], config.get("weight_decay", 0.0)
    if config["name"] == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=lr,
            momentum=config.get("momentum", 0.9),
            nesterov=config.get("nesterov", False),
            weight_decay=decay,
        )
    if config["name"] == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=decay)
    raise SystemExit(f"reference_loop: no hand-written optimizer {config['name']!r}")


def make_schedule(config: dict[str, Any], optimizer: torch.optim.Optimizer, steps: int) -> Any:
    if config["name"] == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=config.get("max_lr") or optimizer.param_groups[0]["lr"],
            total_steps=steps,
            pct_start=config.get("pct_start", 0.3),
        )
    if config["name"] == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    raise SystemExit(f"reference_loop: no hand-written schedule {config['name']!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--data-root", help="Overrides data.root.")
    parser.add_argument("--epochs", type=int, help="Overrides trainer.epochs.")
    args = parser.parse_args()
    config = yaml.safe_load(args.config.read_text())
    data_cfg, trainer = config["data"], config.get("trainer", {})
    epochs = args.epochs or trainer.get("epochs", 10)
    torch.manual_seed(config["seed"])
    torch.backends.cudnn.benchmark = True
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    data = load_data(data_cfg, config["seed"], args.data_root)
    inputs, labels = data["train"]
    classes = int(labels.max()) + 1
    n_val = max(1, round(len(labels) * data_cfg.get("val_fraction", 0.1)))
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(config["seed"]))
    train_idx, val_idx = order[n_val:].sort().values, order[:n_val].sort().values

    model = build_model(config["model"], tuple(inputs.shape[1:]), classes).to(device)
    is_conv = inputs.dim() == 4 and config["model"]["name"] != "mlp"
    memory_format = torch.channels_last if is_conv else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()

    if "mean" in data:
        mean = torch.tensor(data["mean"], device=device).view(1, -1, 1, 1)
        std = torch.tensor(data["std"], device=device).view(1, -1, 1, 1)

    def prepare(x: Tensor, augment: bool = False) -> Tensor:
        """Images: uint8 to normalized float, on the device. Features pass through."""
        if x.dtype != torch.uint8:
            return x
        if augment:
            x = random_crop_flip(x)
        x = (x.float() / 255 - mean) / std
        return x.contiguous(memory_format=memory_format)

    train_x, train_y = inputs[train_idx].to(device), labels[train_idx].to(device)
    val_x, val_y = inputs[val_idx].to(device), labels[val_idx].to(device)
    test_x, test_y = data["test"][0].to(device), data["test"][1].to(device)
    augment = data_cfg.get("augment", data_cfg["name"] == "cifar10")

    batch_size = data_cfg["batch_size"]
    eval_batch_size = data_cfg.get("eval_batch_size") or batch_size
    steps_per_epoch = math.ceil(len(train_y) / batch_size)
    optimizer = make_optimizer(config["optimizer"], model)
    schedule = make_schedule(config["scheduler"], optimizer, epochs * steps_per_epoch)
    smoothing = config.get("loss", {}).get("label_smoothing", 0.0)

    def accuracy(x: Tensor, y: Tensor) -> float:
        model.eval()
        correct = torch.zeros((), dtype=torch.long, device=device)
        with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            for i in range(0, len(y), eval_batch_size):
                logits = model(prepare(x[i : i + eval_batch_size]))
                correct += (logits.argmax(1) == y[i : i + eval_batch_size]).sum()
        model.train()
        return correct.item() / len(y)

    out = Path(tempfile.mkdtemp(prefix="reference-loop-"))  # the benchmark deletes it
    epoch_times, val_accuracies = [], []
    for _ in range(epochs):
        start = time.perf_counter()
        shuffled = torch.randperm(len(train_y), device=device)
        for i in range(0, len(train_y), batch_size):
            index = shuffled[i : i + batch_size]
            x, y = prepare(train_x[index], augment), train_y[index]
            with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(model(x), y, label_smoothing=smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        epoch_times.append(time.perf_counter() - start)
        val_accuracies.append(accuracy(val_x, val_y))
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
        torch.save(state, out / "last.pt")
    result = {
        "epoch_times": epoch_times,
        "val_accuracy": val_accuracies,
        "test_accuracy": accuracy(test_x, test_y),
        "device": str(device),
        "precision": "bf16" if bf16 else "fp32",
        "channels_last": memory_format is torch.channels_last,
        "checkpoint": str(out / "last.pt"),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
