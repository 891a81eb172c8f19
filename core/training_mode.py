"""Which modules behave differently in training mode, for nodes whose compiled form fixes the mode.

A strategy that compiles one recorded run (``trace``, ``export``: those that need
tracing inputs) fixes the branch each module took on ``self.training``:
BatchNorm keeps using batch statistics, Dropout keeps dropping, and the compiled
node's ``.eval()`` changes nothing.  torch works that way; torchstitch knows the
mode at compile time, so it records it in the plan (:attr:`Outcome.training
<torchstitch.Outcome.training>`) and warns when a node fixed in training mode
holds a module that depends on it.  A node fixed in eval mode likewise ignores
``.train()``: that is the usual inference case, recorded but not warned about.

The rule, practical rather than complete:

- torch's own modules depend on the mode when it changes what they compute:
  batch and instance norms that track running statistics, dropouts with ``p > 0``,
  ``MultiheadAttention`` and multi-layer RNNs with dropout, ``RReLU``; other
  ``torch.nn`` modules do not (their children are checked on their own);
- any other module depends on it when its ``forward`` reads an attribute named
  ``training`` (``self.training``), including in comprehensions and closures
  defined in ``forward``; a helper method that reads it is not seen.
"""

from __future__ import annotations

import logging
import types
from collections.abc import Iterable

from torch import nn

__all__ = ["depends_on_training", "training_dependent"]

log = logging.getLogger(__name__)


def depends_on_training(module: nn.Module) -> bool:
    """Whether ``module``'s own computation differs between ``train()`` and ``eval()``."""
    if isinstance(module, nn.modules.batchnorm._NormBase):  # batch and instance norms
        return bool(module.track_running_stats)
    if isinstance(module, nn.modules.dropout._DropoutNd):
        return module.p > 0
    if isinstance(module, nn.MultiheadAttention):
        return module.dropout > 0
    if isinstance(module, nn.RNNBase):
        return module.dropout > 0 and module.num_layers > 1
    if isinstance(module, nn.RReLU):
        return True
    if type(module).__module__.startswith("torch."):
        return False
    forward = getattr(type(module), "forward", None)
    code = getattr(forward, "__code__", None)
    return code is not None and _reads_training(code)


def _reads_training(code: types.CodeType) -> bool:
    if "training" in code.co_names:
        return True
    return any(isinstance(const, types.CodeType) and _reads_training(const) for const in code.co_consts)


def training_dependent(modules: Iterable[tuple[str, nn.Module]]) -> list[str]:
    """The paths of the modules in training mode whose computation depends on it."""
    return [path for path, module in modules if module.training and depends_on_training(module)]
