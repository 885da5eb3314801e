"""Datasets: importing this package registers the built-in ones (without importing torch).

`dataset` says what a dataset builder returns; `memory` and `streaming` are the two ways
data is held; `batching` decides which samples make each batch; `images` is the one
image reader everything shares.
"""

from trainkit.data import (
    huggingface,
    image_folder,
    synthetic,
    table,
    torchvision_catalog,
    torchvision_datasets,
)

__all__ = [
    "huggingface",
    "image_folder",
    "synthetic",
    "table",
    "torchvision_catalog",
    "torchvision_datasets",
]
