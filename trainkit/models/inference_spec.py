"""What a trained model takes and gives, stored with it so inference never needs its data.

After training on a folder of images, using the model on a new photo needs the class
names, the input shape and the exact preprocessing (decoded channels, resize, the
per-channel mean and std computed from the training images). Rebuilding the training
set to recover them is slow, and wrong once the folder has changed. So every checkpoint
and every export carries an `InferenceSpec`, as plain data. Like timm's pretrained
configs, it belongs with the model: a run computes it from its config and data, and
`eval`, `predict` and `export` read it back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainkit.data.images import ImageFormat
from trainkit.data.table_format import TableFormat
from trainkit.errors import UserError

if TYPE_CHECKING:
    from trainkit.config.schema import Config
    from trainkit.data.dataset import DataInfo, Dataset


@dataclass(frozen=True)
class InferenceSpec:
    input_shape: tuple[int, ...]  # what the model was built for, without the batch dimension
    num_outputs: int  # the model's output width
    num_classes: int | None  # None: a regression model
    class_names: tuple[str, ...]
    target_dim: int = 1  # regression targets per sample
    image: ImageFormat | None = None  # None: feature rows, used as given
    table: TableFormat | None = None  # rows of a table: how they become the input tensor
    class_counts: tuple[int, ...] = ()  # training samples per class (loss.class_weights: auto)

    @property
    def is_classification(self) -> bool:
        return self.num_classes is not None

    def check_classes(self, classes: tuple[str, ...]) -> None:
        """A model scores data only with the classes it was trained on, in that order."""
        if self.class_names and classes and classes != self.class_names:
            raise UserError(
                f"the data's classes ({', '.join(classes)}) are not the ones the model was "
                f"trained on ({', '.join(self.class_names)}); point data.root at data with "
                "the same class folders."
            )

    def data_info(self) -> DataInfo:
        from trainkit.data.dataset import DataInfo

        return DataInfo(
            self.input_shape,
            self.num_classes,
            self.class_names,
            self.target_dim,
            self.class_counts,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "input_shape": list(self.input_shape),
            "num_outputs": self.num_outputs,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "target_dim": self.target_dim,
            "image": self.image.as_dict() if self.image else None,
            "table": self.table.as_dict() if self.table else None,
            "class_counts": list(self.class_counts),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InferenceSpec:
        return cls(
            input_shape=tuple(int(d) for d in data["input_shape"]),
            num_outputs=int(data["num_outputs"]),
            num_classes=data["num_classes"],
            class_names=tuple(data["class_names"]),
            target_dim=int(data.get("target_dim", 1)),
            image=ImageFormat.from_dict(data["image"]) if data.get("image") else None,
            table=TableFormat.from_dict(data["table"]) if data.get("table") else None,
            class_counts=tuple(int(n) for n in data.get("class_counts", ())),
        )


def model_spec(config: Config, data: Dataset) -> InferenceSpec:
    """The spec of the model `config` builds for `data` (model.input_shape and
    model.num_outputs, when set, win over the dataset's)."""
    info = data.info
    input_shape = tuple(config.model.input_shape or info.input_shape)
    image = None
    if data.mean is not None and data.std is not None and len(input_shape) == 3:
        image = ImageFormat(
            channels=input_shape[0],
            size=(input_shape[1], input_shape[2]),
            mean=tuple(data.mean),
            std=tuple(data.std),
            resize=data.resize,
        )
    return InferenceSpec(
        input_shape=input_shape,
        num_outputs=config.model.num_outputs or info.num_outputs,
        num_classes=info.num_classes,
        class_names=tuple(info.class_names),
        target_dim=info.target_dim,
        image=image,
        table=getattr(data, "table", None),  # a plugin's Dataset from before tables may lack it
        class_counts=info.class_counts,
    )
