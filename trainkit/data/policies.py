"""Per-image augmentation policies (data.augment: randaugment, trivialaugment, autoaugment).

Each training image gets torchvision's v2 policy of that name (RandAugment,
TrivialAugmentWide, AutoAugment with its ImageNet policy) on its uint8 pixels, then the
usual random crop and flip of `crop_flip`, batch-wise on the device. The policy runs
where the image is: in the streaming workers as each file is read, or on the batch cut
from memory, image by image.

Every random draw of image `sample` in `epoch` comes from the global generator seeded by
(seed, epoch, sample) alone, inside `fork_rng` so the training's own draws (dropout, the
mixing of batches) never move. So both paths, any number of workers and a resume give
the same images. `sample` is the image's index in its source's training images, which
both paths share.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from trainkit.data.seeding import derived_seed

if TYPE_CHECKING:
    from torch import Tensor

POLICIES = ("randaugment", "trivialaugment", "autoaugment")


@dataclass
class SamplePolicy:
    """Policy `name`, drawn per image from (seed, epoch, sample)."""

    name: str
    seed: int
    _policy: Any = field(default=None, init=False, repr=False, compare=False)

    def image(self, image: Tensor, epoch: int, sample: int) -> Tensor:
        """One uint8 CHW image, augmented."""
        import torch

        with torch.random.fork_rng(devices=[]):
            return self._one(image, epoch, sample)

    def batch(self, images: Tensor, epoch: int, samples: list[int]) -> Tensor:
        """A uint8 NCHW batch, each image augmented as `image` would."""
        import torch

        threads = torch.get_num_threads()  # one image is too small to share out
        torch.set_num_threads(1)
        try:
            with torch.random.fork_rng(devices=[]):
                augmented = [self._one(x, epoch, s) for x, s in zip(images, samples, strict=True)]
        finally:
            torch.set_num_threads(threads)
        return torch.stack(augmented)

    def _one(self, image: Tensor, epoch: int, sample: int) -> Tensor:
        import torch

        torch.default_generator.manual_seed(derived_seed("policy", self.seed, epoch, sample))
        return self._transform()(image)

    def _transform(self) -> Any:
        if self._policy is None:
            from torchvision.transforms import v2

            self._policy = {
                "randaugment": v2.RandAugment,
                "trivialaugment": v2.TrivialAugmentWide,
                "autoaugment": v2.AutoAugment,
            }[self.name]()
        return self._policy

    def __getstate__(self) -> dict[str, Any]:  # workers build their own torchvision policy
        return {"name": self.name, "seed": self.seed}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.name, self.seed, self._policy = state["name"], state["seed"], None
