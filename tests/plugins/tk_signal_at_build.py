"""A dataset whose building is interrupted by a stop signal, as a long decode would be:
a test plugin. Tests copy it beside their config with `tests.helpers.install_plugin`."""

import os

from pydantic import Field

from trainkit.data.synthetic import SyntheticLogisticParams, synthetic_logistic
from trainkit.plugin import register_dataset


class SignalAtBuildParams(SyntheticLogisticParams):
    send: int = Field(description="The signal this process sends itself while building.")


@register_dataset("tk_signal_at_build", SignalAtBuildParams)
def signal_at_build(params, seed):
    """Synthetic classes; a stop signal arrives while they are made."""
    os.kill(os.getpid(), params.send)
    return synthetic_logistic(params, seed)
