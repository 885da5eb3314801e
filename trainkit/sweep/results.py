"""A sweep directory's files: its sweep file, study, trials and results.

trials.csv holds one row per trial (completed ones best first, every digit kept);
best.yaml the best trial's resolved config, ready to train; `results_table` is how
`trainkit runs SWEEP_DIR` prints them.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from trainkit.files import atomic_write_bytes
from trainkit.sweep.space import SweepSpec, from_optuna, one_line
from trainkit.training.run_dir import CONFIG_FILE

SWEEP_FILE, BASE_FILE, STUDY_FILE = "sweep.yaml", "base.yaml", "study.journal"
TRIALS_FILE, BEST_FILE, LOGS = "trials.csv", "best.yaml", "logs"
RETRY_OF = "retry_of"  # user attribute of a trial that runs a failed trial's values again


def is_sweep(directory: Path) -> bool:
    return (directory / SWEEP_FILE).is_file() and (directory / STUDY_FILE).is_file()


def trial_dir(directory: Path, number: int) -> Path:
    return directory / f"trial-{number:04d}"


def retried(study: Any) -> set[int]:
    """The failed trials whose values were queued to run again."""
    return {t.user_attrs[RETRY_OF] for t in study.trials if RETRY_OF in t.user_attrs}


def write_results(study: Any, spec: SweepSpec, directory: Path) -> None:
    """trials.csv (one row per trial, completed ones best first; a failed trial whose
    values ran again is left out, its retry stands for it) and best.yaml (the best
    trial's resolved config, ready to train)."""
    again = retried(study)
    rows = []
    for trial in study.trials:
        if trial.number in again:
            continue
        value = trial.value
        if value is None and trial.intermediate_values:  # pruned: its last report
            value = trial.intermediate_values[max(trial.intermediate_values)]
        params = {k: from_optuna(spec.space[k], v) for k, v in trial.params.items()}
        rows.append((trial.number, trial.state.name.lower(), value, params))
    sign = -1 if spec.direction == "maximize" else 1
    rows.sort(key=lambda r: (r[1] != "complete", sign * r[2] if r[1] == "complete" else r[0]))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["trial", "state", spec.metric, *spec.space])
    for number, state, value, params in rows:
        shown_value = "" if value is None else f"{value:.6g}"
        writer.writerow(
            [number, state, shown_value, *(one_line(params.get(k)) for k in spec.space)]
        )
    atomic_write_bytes(directory / TRIALS_FILE, buffer.getvalue().encode())
    best = next((row for row in rows if row[1] == "complete" and row[2] is not None), None)
    if best is not None:
        config = (trial_dir(directory, best[0]) / CONFIG_FILE).read_text()
        header = f"# best trial {best[0]} of sweep {spec.name}: {spec.metric} {best[2]:.6g}\n"
        atomic_write_bytes(directory / BEST_FILE, (header + config).encode())


def read_trials(directory: Path) -> list[dict[str, str]]:
    """trials.csv's rows (none before the first trial started)."""
    try:
        with (directory / TRIALS_FILE).open() as handle:
            return list(csv.DictReader(handle))
    except OSError:
        return []


def tally(directory: Path) -> dict[str, int]:
    """How many trials are in each state (complete, pruned, fail, running), from
    trials.csv."""
    counts: dict[str, int] = {}
    for row in read_trials(directory):
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    return counts


def results_table(directory: Path) -> list[str]:
    """trials.csv as aligned text, best first (what `trainkit runs SWEEP_DIR` shows)."""
    with (directory / TRIALS_FILE).open() as handle:
        table = [[_short(cell) for cell in row] for row in csv.reader(handle) if row]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table
    ]


def _short(cell: str) -> str:
    """A sampled float in four significant digits (trials.csv keeps every digit)."""
    try:
        number = float(cell)
    except ValueError:
        return cell
    return cell if number.is_integer() else f"{number:.4g}"
