"""Optimizers and schedules: importing this package registers the built-in ones (without
importing torch)."""

from trainkit.optim import optimizers, schedulers

__all__ = ["optimizers", "schedulers"]
