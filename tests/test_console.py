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


def test_rich_reporter_draws_a_bar_on_a_terminal() -> None:
    screen = io.StringIO()
    drive(RichReporter(Console(file=screen, force_terminal=True, width=160)))
    output = screen.getvalue()
    assert "━" in output and "1/4" in output  # the bar, resumed at batch 1 of 4
    assert "epoch 1/2  train/loss 0.4000" in output  # the summary that replaces it
