"""trainkit: config-driven PyTorch training from a YAML experiment file."""

__version__ = "0.2.0"
