"""Multi-layer perceptron: Nielsen's MNIST network and its modern variants."""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING, Literal

from pydantic import Field, PositiveInt

from trainkit.config.registry import ModelParams, register_model

if TYPE_CHECKING:
    from torch import nn

Activation = Literal["relu", "sigmoid", "tanh"]


class MLPParams(ModelParams):
    hidden: list[PositiveInt] = Field(
        [100], description="Hidden layer sizes; [30] is Nielsen's 784-30-10."
    )
    activation: Activation = Field("relu", description="Hidden-layer non-linearity.")
    output_activation: Literal["none", "sigmoid"] = Field(
        "none", description="sigmoid for Nielsen's quadratic-cost network; none gives logits."
    )
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout after each hidden layer.")
    init: Literal["default", "normal", "scaled"] = Field(
        "default",
        description="default: PyTorch's; normal: weights and biases N(0, 1) (Nielsen, "
        "chapter 1); scaled: weights N(0, 1/fan_in), biases N(0, 1) (Nielsen, chapter 3).",
    )
    category_embedding: Literal["auto", "one_hot"] | PositiveInt = Field(
        "auto",
        description="How a table's category columns enter: each through an embedding of "
        "this width, auto: a width that grows with its number of values "
        "(min(600, 1.6 n^0.56)); one_hot: as one-hot vectors.",
    )

    def category_width(self, cardinality: int) -> int | None:
        from trainkit.models.table_inputs import embedding_width

        if self.category_embedding == "one_hot":
            return None
        if self.category_embedding == "auto":
            return embedding_width(cardinality)
        return self.category_embedding


def activation_layer(name: Activation) -> nn.Module:
    from torch import nn

    return {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}[name]()


@register_model("mlp", MLPParams)
def mlp(params: MLPParams, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    """Fully connected network on the flattened input."""
    from torch import nn

    sizes = [math.prod(input_shape), *params.hidden, num_outputs]
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        linear = nn.Linear(fan_in, fan_out)
        if params.init != "default":
            std = 1.0 / math.sqrt(fan_in) if params.init == "scaled" else 1.0
            nn.init.normal_(linear.weight, std=std)
            nn.init.normal_(linear.bias, std=1.0)
        layers.append(linear)
        if i < len(params.hidden):
            layers.append(activation_layer(params.activation))
            if params.dropout:
                layers.append(nn.Dropout(params.dropout))
    if params.output_activation == "sigmoid":
        layers.append(nn.Sigmoid())
    return nn.Sequential(*layers)
