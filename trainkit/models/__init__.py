"""Models: importing this package registers the built-in ones (without importing torch).

Each builder takes its validated parameters, the input shape (without the batch
dimension) and the number of outputs, and returns an `nn.Module` producing logits (or
regression values). `factory.build_model` is how every command builds one;
`inference_spec` is what a trained model takes and gives.
"""

from trainkit.models import cifar_fast, convnet, lenet, mlp, regression, resnet, torchvision_zoo

__all__ = ["cifar_fast", "convnet", "lenet", "mlp", "regression", "resnet", "torchvision_zoo"]
