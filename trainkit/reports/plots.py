"""`trainkit plot`: the curves of one or several runs as one picture.

One panel per quantity (loss, accuracy, learning rate by default), epochs along the x
axis. Each run has its colour; within it, validation is a solid line, the epoch mean
of training a dashed one, the training loss between epochs a faint line, and the final
test score a star. Everything is read from metrics.jsonl, written with matplotlib.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainkit.errors import UserError
from trainkit.reports.runs_table import summarize
from trainkit.training.metrics_log import read_records

DEFAULT_QUANTITIES = ("loss", "accuracy", "lr")
FORMATS = (".png", ".svg", ".pdf")


def plot_runs(runs: list[Path], quantities: list[str] | None, out: Path) -> list[str]:
    """Draw `quantities` of `runs` into `out`; the quantities drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    histories = {_label(run, runs): read_records(run) for run in runs}
    for label, records in histories.items():
        if not any(r["scope"] == "epoch" for r in records):
            raise UserError(f"plot: {label} has no completed epoch in its metrics.jsonl yet.")
    wanted = quantities or [q for q in DEFAULT_QUANTITIES if _has(histories, q)]
    missing = [q for q in wanted if not _has(histories, q)]
    if missing:
        known = sorted({_quantity(key) for rs in histories.values() for r in rs for key in r})
        raise UserError(
            f"plot: no run logged {', '.join(missing)}. They logged: "
            f"{', '.join(k for k in known if k)}."
        )
    figure, axes = plt.subplots(1, len(wanted), figsize=(5.2 * len(wanted), 3.8), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, records in enumerate(histories.values()):
        colour = colours[index % len(colours)]
        for axis, quantity in zip(axes[0], wanted, strict=True):
            _draw(axis, records, quantity, colour)
    for axis, quantity in zip(axes[0], wanted, strict=True):
        axis.set_title(quantity)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        if quantity == "lr":
            axis.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    _legend(axes[0][0], list(histories), colours)
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return wanted


def _label(run: Path, runs: list[Path]) -> str:
    summary = summarize(run)
    names = [summarize(other).name for other in runs]
    return summary.name if names.count(summary.name) == 1 else f"{summary.name} {summary.run_id}"


def _quantity(key: str) -> str:
    if key in ("step", "epoch", "scope"):
        return ""
    return key.split("/", 1)[1] if "/" in key else key


def _has(histories: dict[str, list[dict[str, Any]]], quantity: str) -> bool:
    return any(_quantity(key) == quantity for rs in histories.values() for r in rs for key in r)


def _draw(axis: Any, records: list[dict[str, Any]], quantity: str, colour: str) -> None:
    epochs = [r for r in records if r["scope"] == "epoch"]

    def line(points: list[tuple[float, float]], style: str, **looks: Any) -> None:
        if len(points) == 1 and "marker" not in looks and style in ("-", "--"):
            looks = {**looks, "marker": "o", "markersize": 4}  # one point: still seen
        if points:
            axis.plot(*zip(*points, strict=True), style, color=colour, **looks)

    for split, style in (("train", "--"), ("val", "-")):
        key = f"{split}/{quantity}"
        line([(r["epoch"], r[key]) for r in epochs if key in r], style, marker="o", markersize=3)
    between = "train/loss" if quantity == "loss" else quantity  # logged every interval
    per_epoch = _steps_per_epoch(epochs)
    steps = [
        (r["step"] / per_epoch, r[between])
        for r in records
        if per_epoch and r["scope"] == "interval" and between in r
    ]
    at_epochs = [(r["epoch"], r[between]) for r in epochs if between in r]
    if len(steps) >= max(2, len(at_epochs)):  # intervals finer than epochs: draw them
        line(steps, "-", alpha=0.35 if quantity == "loss" else 1.0, linewidth=0.8)
    elif "/" not in between:  # sparse intervals (epochs shorter than log_every_steps)
        line(at_epochs, "-", marker="o", markersize=3)
    tests = [r for r in records if r["scope"] == "test" and f"test/{quantity}" in r]
    line([(r["epoch"], r[f"test/{quantity}"]) for r in tests], "*", markersize=11)


def _steps_per_epoch(epochs: list[dict[str, Any]]) -> float | None:
    """Optimizer steps per epoch, from the step count at the end of the first epoch."""
    first = next((r for r in epochs if r["epoch"] >= 1 and r["step"] > 0), None)
    return first["step"] / first["epoch"] if first else None


def _legend(axis: Any, labels: list[str], colours: list[str]) -> None:
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color=colours[i % len(colours)], label=label)
        for i, label in enumerate(labels)
    ]
    handles += [
        Line2D([], [], color="grey", linestyle="-", label="val"),
        Line2D([], [], color="grey", linestyle="--", label="train (epoch mean)"),
        Line2D([], [], color="grey", alpha=0.35, label="train (between epochs)"),
        Line2D([], [], color="grey", marker="*", linestyle="", markersize=9, label="test"),
    ]
    axis.legend(handles=handles, fontsize=8, loc="best")


def plot_sweep(directory: Path, out: Path) -> list[str]:
    """A sweep's metric against each searched parameter, one panel each: completed
    trials as dots, pruned ones (their last report) as crosses, the best one starred."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import yaml

    from trainkit.sweep.results import SWEEP_FILE, TRIALS_FILE
    from trainkit.sweep.space import SweepSpec

    spec = SweepSpec.model_validate(yaml.safe_load((directory / SWEEP_FILE).read_text()))
    with (directory / TRIALS_FILE).open() as handle:
        rows = [row for row in csv.DictReader(handle) if row[spec.metric]]
    if not rows:
        raise UserError(f"plot: no trial of {directory} has reported {spec.metric} yet.")
    keys = list(spec.space)
    figure, axes = plt.subplots(1, len(keys), figsize=(4.6 * len(keys), 3.8), squeeze=False)
    for axis, key in zip(axes[0], keys, strict=True):
        parameter = spec.space[key]
        choices = [
            yaml.safe_dump(c, default_flow_style=True).strip().removesuffix("...").strip()
            for c in parameter.choice or []
        ]
        for state, marker in (("complete", "o"), ("pruned", "x")):
            points = [
                (choices.index(r[key]) if choices else float(r[key]), float(r[spec.metric]))
                for r in rows
                if r["state"] == state
            ]
            if points:
                axis.plot(*zip(*points, strict=True), marker, linestyle="", label=state)
        complete = [r for r in rows if r["state"] == "complete"]
        if complete:
            best = complete[0]  # trials.csv lists the best first
            x = choices.index(best[key]) if choices else float(best[key])
            axis.plot([x], [float(best[spec.metric])], "*", markersize=14, label="best")
        if choices:
            axis.set_xticks(range(len(choices)), choices)
        elif parameter.log:
            axis.set_xscale("log")
        axis.set_xlabel(key)
        axis.set_ylabel(spec.metric)
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    figure.suptitle(f"sweep {spec.name}: {len(rows)} trials")
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return keys
