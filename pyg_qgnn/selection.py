r"""Model selection on validation: the state of the best evaluated epoch.

One class serves every training loop (node, graph, sampled, point-cloud,
recommendation, cascade distillation). It sits below :mod:`pyg_qgnn.train`
and :mod:`pyg_qgnn.distill` so that both can import it.
"""
import copy
from typing import Callable, Optional

from torch import nn

#: ``admissible(model) -> bool`` after an evaluation pass: may this epoch be
#: selected? (e.g. A²Q's average bit width within its budget)
Admissible = Callable[[nn.Module], bool]


class Selection:
    r"""Keeps the state of the epoch with the best validation score (the
    first on ties) among the admissible ones; when no epoch is admissible,
    among all of them."""
    def __init__(self, admissible: Optional[Admissible] = None):
        self.admissible = admissible
        self.found_admissible = False
        self.score, self.epoch, self.state = -float('inf'), 0, None

    def offer(self, model: nn.Module, score: float, epoch: int) -> bool:
        r"""Considers :obj:`model` (just evaluated) at :obj:`epoch`;
        :obj:`True` if it is now the selected one."""
        ok = self.admissible is None or bool(self.admissible(model))
        if not ok and self.found_admissible:
            return False
        if ok and not self.found_admissible:  # it replaces any earlier one
            self.found_admissible, self.score = True, -float('inf')
        if score <= self.score:
            return False
        self.score, self.epoch = score, epoch
        self.state = copy.deepcopy(model.state_dict())
        return True

    def restore(self, model: nn.Module) -> nn.Module:
        r"""Loads the selected state into :obj:`model` (nothing when no
        epoch was offered)."""
        if self.state is not None:
            model.load_state_dict(self.state)
        return model
