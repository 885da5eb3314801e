"""Per-image augmentation policies (data.augment: randaugment, trivialaugment, autoaugment).

Each training image gets torchvision's v2 policy of that name (RandAugment,
TrivialAugmentWide, AutoAugment with its ImageNet policy) on its uint8 pixels, then the
usual random crop and flip of `crop_flip`, batch-wise on the device. The policy runs
where the batch is: in the streaming worker that reads it, or on the batch cut from
memory.

Every random draw of image `sample` in `epoch` comes from the global generator seeded by
(seed, epoch, sample) alone, inside `fork_rng` so the training's own draws (dropout, the
mixing of batches) never move. So both paths, any number of workers and a resume give
the same images. `sample` is the image's index in its source's training images, which
both paths share.

Speed. On small images a policy's cost is almost all per call (torchvision's dispatch
and its kernels' set-up), not per pixel: on a 32-pixel image TrivialAugment took about
430 µs, most of a streamed image's time. So a batch is augmented in two passes. First
each image's operations are drawn, in the order and from the generator state that the
policy's own `forward` draws them. Then each operation is applied once to all the images
that drew it with the same magnitude, through the policy's own kernels, which work on
batches. The pixels are those of calling the policy on each image (tested); what
changes is how many calls make them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from trainkit.data.seeding import derived_seed

if TYPE_CHECKING:
    from torch import Tensor

POLICIES = ("randaugment", "trivialaugment", "autoaugment")

Operation = tuple[str, float]  # (torchvision's name of the operation, its magnitude)


@dataclass
class SamplePolicy:
    """Policy `name`, drawn per image from (seed, epoch, sample)."""

    name: str
    seed: int
    _policy: Any = field(default=None, init=False, repr=False, compare=False)
    _magnitudes: dict[tuple[str, int, int, int], tuple[Any, bool]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def batch(self, images: Tensor, epoch: int, samples: list[int]) -> Tensor:
        """A uint8 NCHW batch, each image augmented by its own draws (see the module)."""
        import torch

        height, width = images.shape[-2:]
        with torch.random.fork_rng(devices=[]):
            drawn = []
            for sample in samples:
                key = derived_seed("policy", self.seed, epoch, sample)
                torch.default_generator.manual_seed(key)
                drawn.append(self._draw(height, width))
        threads = torch.get_num_threads()  # the groups are too small to share out
        torch.set_num_threads(1)
        try:
            return self._apply(images, drawn)
        finally:
            torch.set_num_threads(threads)

    def _apply(self, images: Tensor, drawn: list[list[Operation]]) -> Tensor:
        """Step k of every image's operations, one call per (operation, magnitude)."""
        import torch

        policy = self._transform()
        out = images.clone()
        for step in range(max(map(len, drawn), default=0)):
            groups: dict[tuple[str, float, float], list[int]] = {}
            for i, operations in enumerate(drawn):
                if step < len(operations):
                    name, magnitude = operations[step]
                    key = (name, magnitude, math.copysign(1.0, magnitude))  # -0.0 stays apart
                    groups.setdefault(key, []).append(i)
            for (name, magnitude, _), members in groups.items():
                if name == "Identity":
                    continue
                index = torch.tensor(members, device=out.device)
                out[index] = policy._apply_image_or_video_transform(
                    out[index], name, magnitude, interpolation=policy.interpolation,
                    fill=policy._fill,
                )  # fmt: skip
        return out

    def _draw(self, height: int, width: int) -> list[Operation]:
        """One image's operations, drawn as the policy's `forward` draws them."""
        import torch

        policy = self._transform()
        space = policy._AUGMENTATION_SPACE
        if self.name == "autoaugment":
            chosen = policy._policies[int(torch.randint(len(policy._policies), ()))]
            operations = []
            for name, probability, level in chosen:
                if not torch.rand(()) <= probability:
                    continue
                operations.append((name, self._magnitude(name, 10, height, width, level)))
            return operations
        if self.name == "randaugment":
            steps, bins, level = policy.num_ops, policy.num_magnitude_bins, policy.magnitude
        else:  # trivialaugment: one operation, a random level
            steps, bins, level = 1, policy.num_magnitude_bins, None
        operations = []
        for _ in range(steps):
            name = tuple(space)[int(torch.randint(len(space), ()))]
            operations.append((name, self._magnitude(name, bins, height, width, level)))
        return operations

    def _magnitude(self, name: str, bins: int, height: int, width: int, level: int | None) -> float:
        """Operation `name`'s magnitude at `level` (None: a random one), negated half the
        time where the policy signs it; 0.0 for operations without one. Draws as
        `forward` does."""
        import torch

        key = (name, bins, height, width)
        if key not in self._magnitudes:  # the policy computes this table on every call
            table, signed = self._transform()._AUGMENTATION_SPACE[name]
            self._magnitudes[key] = (table(bins, height, width), signed)
        magnitudes, signed = self._magnitudes[key]
        if magnitudes is None:
            return 0.0
        magnitude = float(magnitudes[int(torch.randint(bins, ())) if level is None else level])
        if signed and torch.rand(()) <= 0.5:
            magnitude *= -1
        return magnitude

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
        self.name, self.seed = state["name"], state["seed"]
        self._policy, self._magnitudes = None, {}
