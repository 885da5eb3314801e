"""Models: importing this package registers the built-in ones (without importing torch).

Each builder takes its validated parameters, the input shape (without the batch
dimension) and the number of outputs, and returns an `nn.Module` producing logits (or
regression values).
"""

from trainkit.models import convnet, lenet, mlp, regression, resnet, zoo

__all__ = ["convnet", "lenet", "mlp", "regression", "resnet", "zoo"]
