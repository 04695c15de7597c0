r"""Graph classification with stratified k-fold cross-validation.

Folds follow PyG's kernel benchmark (`benchmark/kernel
<https://github.com/pyg-team/pytorch_geometric/tree/master/benchmark/kernel>`_)
and Degree-Quant: :class:`~sklearn.model_selection.StratifiedKFold` with
shuffling; fold :math:`i` is the test set, fold :math:`i - 1` the validation
set carved from the remaining training graphs, and the checkpoint with the
best validation accuracy is scored on the test fold.
"""
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.loader import DataLoader

from pyg_qgnn.selection import Admissible, Selection
from pyg_qgnn.train.node import Penalty, make_optimizer
from pyg_qgnn.train.results import Summary, summarize

Fold = Tuple[Tensor, Tensor, Tensor]  # train, validation, test indices


def stratified_folds(labels: Tensor, folds: int = 10,
                     seed: int = 12345) -> List[Fold]:
    r"""Index triples :obj:`(train, val, test)`, one per fold: the test
    folds partition the graphs, each stratified by label."""
    from sklearn.model_selection import StratifiedKFold

    labels = torch.as_tensor(labels).view(-1)
    # Two folds would leave nothing to train on: one tests, one validates.
    if not 3 <= folds <= labels.numel():
        raise ValueError(f"'folds' must be in 3..{labels.numel()} (the number "
                         f"of graphs) (got {folds})")
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    tests = [torch.from_numpy(idx) for _, idx in
             splitter.split(np.zeros(labels.numel()), labels.numpy())]
    result = []
    for i, test in enumerate(tests):
        val = tests[i - 1]
        train = torch.ones(labels.numel(), dtype=torch.bool)
        train[test] = False
        train[val] = False
        result.append((train.nonzero().view(-1), val, test))
    return result


def _batch_forward(model: nn.Module, batch) -> Tensor:
    return model(batch.x, batch.edge_index, batch.batch)


@torch.no_grad()
def accuracy(model: nn.Module, loader: DataLoader) -> float:
    r"""Graph classification accuracy of :obj:`model` in evaluation mode."""
    model.eval()
    correct = total = 0
    for batch in loader:
        pred = _batch_forward(model, batch).argmax(dim=-1)
        correct += int((pred == batch.y.view(-1)).sum())
        total += batch.num_graphs
    return correct / max(total, 1)


@dataclass
class CrossValidation:
    r"""Per-fold test accuracies (of the validation-selected epochs)."""
    test_accs: List[float]
    val_accs: List[float]
    epochs: List[int]
    curves: List[List[Tuple[int, float, float]]] = field(default_factory=list)

    @property
    def summary(self) -> Summary:
        return summarize(self.test_accs)


def train_graph_classifier(model: nn.Module, dataset, fold: Fold,
                           epochs: int, batch_size: int = 128,
                           lr: float = 0.01, weight_decay: float = 0.0,
                           penalty: Optional[Penalty] = None,
                           quant_lr: Optional[float] = None,
                           admissible: Optional[Admissible] = None
                           ) -> Tuple[float, float, int, list]:
    r"""Trains :obj:`model(x, edge_index, batch)` on one fold with Adam
    (learning rate halved every 50 epochs, as in PyG's kernel benchmark);
    returns the validation and test accuracy of the epoch with the best
    validation accuracy (among the epochs :obj:`admissible` accepts after
    the validation pass, see :class:`~pyg_qgnn.train.node.Selection`), that
    epoch, and the curve ``(epoch, train loss, validation accuracy)``. The
    model keeps the selected weights."""
    if epochs < 1:
        raise ValueError(f"'epochs' must be a positive integer (got {epochs})")
    train_idx, val_idx, test_idx = fold
    train_loader = DataLoader(dataset[train_idx], batch_size, shuffle=True)
    val_loader = DataLoader(dataset[val_idx], batch_size)
    test_loader = DataLoader(dataset[test_idx], batch_size)
    optimizer = make_optimizer(model, lr, weight_decay, quant_lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 50, gamma=0.5)
    selection, curve = Selection(admissible), []
    for epoch in range(1, epochs + 1):
        model.train()
        total = 0.0
        for batch in train_loader:
            optimizer.zero_grad()
            loss = F.cross_entropy(_batch_forward(model, batch),
                                   batch.y.view(-1))
            if penalty is not None:
                loss = loss + penalty(model)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * batch.num_graphs
        scheduler.step()
        val = accuracy(model, val_loader)
        curve.append((epoch, total / len(train_idx), val))
        selection.offer(model, val, epoch)
    selection.restore(model)
    return (selection.score, accuracy(model, test_loader), selection.epoch,
            curve)


def cross_validate(make_model: Callable[[int], nn.Module], dataset,
                   folds: Sequence[Fold], epochs: int,
                   progress: Optional[Callable[[], None]] = None,
                   **train_kwargs) -> CrossValidation:
    r"""Runs :func:`train_graph_classifier` on every fold with a fresh
    :obj:`make_model(fold_index)`; :obj:`progress()` is called after each
    fold."""
    result = CrossValidation([], [], [])
    for i, fold in enumerate(folds):
        model = make_model(i)
        val, test, epoch, curve = train_graph_classifier(
            model, dataset, fold, epochs, **train_kwargs)
        result.val_accs.append(val)
        result.test_accs.append(test)
        result.epochs.append(epoch)
        result.curves.append(curve)
        if progress is not None:
            progress()
    return result
