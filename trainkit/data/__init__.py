"""Datasets: importing this package registers the built-in ones (without importing torch)."""

from trainkit.data import image_folder, synthetic, vision

__all__ = ["image_folder", "synthetic", "vision"]
