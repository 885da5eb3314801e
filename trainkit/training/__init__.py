"""Training a run: building it from a config (`build`), the loop (`loop`), starting and
resuming it (`run`, `resume`), and what it writes (`checkpoint`, `run_dir`,
`metrics_log`), with the device, several processes and stop signals.
"""
