from __future__ import annotations

import io

from rich.console import Console

from trainkit.console import PlainReporter, RichReporter, format_metrics


def drive(reporter) -> None:
    reporter.info("training tiny")
    reporter.start_epoch(0, 2, batches=4, done=1)
    for _ in range(3):
        reporter.advance()
    reporter.log_step(7, 3, {"train/loss": 0.5, "lr": 0.1, "samples_per_sec": 1234.0})
    reporter.end_epoch(0, 2, {"train/loss": 0.4, "epoch_time": 1.5, "val/accuracy": 0.9})
    reporter.close()


def test_metrics_read_as_words_and_units() -> None:
    text = format_metrics({"train/loss": 0.12345, "lr": 0.001, "samples_per_sec": 12345.6})
    assert text == "train/loss 0.1235  lr 0.001  12,346 samples/s"


def test_plain_reporter_prints_step_and_epoch_lines(capsys) -> None:
    drive(PlainReporter())
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "training tiny"
    assert lines[1].startswith("epoch 1/2  batch 3/4  step 7  train/loss 0.5000")
    assert lines[2] == "epoch 1/2 done  train/loss 0.4000  epoch_time 1.50s  val/accuracy 0.9000"


def test_rich_reporter_draws_a_bar_within_80_columns() -> None:
    import re

    screen = io.StringIO()
    drive(RichReporter(Console(file=screen, force_terminal=True, width=80)))
    output = screen.getvalue()
    assert "━" in output and "1/4" in output  # the bar, resumed at batch 1 of 4
    assert "epoch 1/2  train loss 0.4000  val acc 0.9000  1.5s" in output  # its summary
    visible = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", output).replace("\r", "\n")
    assert max(len(line) for line in visible.splitlines()) <= 80


def test_time_left_covers_the_epoch_and_the_run() -> None:
    from types import SimpleNamespace

    from trainkit.console import _TimeLeft, clock

    task = SimpleNamespace(speed=10.0, remaining=50, fields={"later": 3000})
    assert str(_TimeLeft().render(task)) == "eta 0:05, run 5:05"
    assert str(_TimeLeft().render(SimpleNamespace(speed=None, remaining=5, fields={}))) == "eta -"
    assert clock(3723) == "1:02:03"


def test_an_epoch_line_keeps_what_fits() -> None:
    from trainkit.console import epoch_line

    metrics = {
        "train/loss": 0.12345,
        "train/accuracy": 0.9,
        "lr": 0.05,
        "epoch_time": 12.34,
        "samples_per_sec": 40000.0,
        "val/loss": 0.2,
        "val/accuracy": 0.95,
    }
    wide = epoch_line(2, 10, metrics, 200)
    assert wide == (
        "epoch 3/10  train loss 0.1235 acc 0.9000  val loss 0.2000 acc 0.9500  lr 0.05  "
        "12.3s  40,000/s"
    )
    narrow = epoch_line(2, 10, metrics, 80)
    assert len(narrow) <= 80 and narrow.startswith(wide[:60]) and "val loss" in narrow
