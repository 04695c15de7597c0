import pytest
import torch
from torch_geometric.data import Data
from torch_geometric.nn import GINConv, global_add_pool

from pyg_qgnn.train import cross_validate, stratified_folds, \
    train_graph_classifier


def toy_dataset(num_graphs=40, seed=0):
    r"""Graphs whose label is whether their nodes' feature is positive."""
    gen = torch.Generator().manual_seed(seed)
    graphs = []
    for i in range(num_graphs):
        n = 4 + i % 3
        label = i % 2
        x = torch.randn(n, 3, generator=gen).abs() * (1 if label else -1)
        edge_index = torch.stack([torch.arange(n), (torch.arange(n) + 1) % n])
        graphs.append(Data(x=x, edge_index=edge_index, y=torch.tensor([label])))
    return graphs


class TinyGIN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = GINConv(torch.nn.Linear(3, 8))
        self.head = torch.nn.Linear(8, 2)

    def forward(self, x, edge_index, batch):
        return self.head(global_add_pool(self.conv(x, edge_index).relu(),
                                         batch))


def test_folds_partition_and_stratify():
    labels = torch.tensor([0] * 30 + [1] * 10)
    folds = stratified_folds(labels, folds=10, seed=1)
    tests = torch.cat([test for _, _, test in folds])
    assert sorted(tests.tolist()) == list(range(40))  # a partition
    for i, (train, val, test) in enumerate(folds):
        assert torch.equal(val, folds[i - 1][2])  # PyG kernel convention
        assert set(train.tolist()).isdisjoint(val.tolist() + test.tolist())
        assert len(train) + len(val) + len(test) == 40
        assert int(labels[test].sum()) == 1  # 10 positives over 10 folds
    again = stratified_folds(labels, folds=10, seed=1)
    assert all(torch.equal(a[2], b[2]) for a, b in zip(folds, again))


def test_folds_reject_bad_count():
    with pytest.raises(ValueError, match="'folds'"):
        stratified_folds(torch.tensor([0, 1, 0]), folds=5)
    with pytest.raises(ValueError, match="'folds' must be in 3"):
        stratified_folds(torch.tensor([0, 1] * 5), folds=2)


def test_cross_validation_learns_a_separable_task():
    dataset = toy_dataset()
    labels = torch.tensor([int(d.y) for d in dataset])
    folds = stratified_folds(labels, folds=4, seed=0)
    calls = []
    torch.manual_seed(0)

    class Indexable(list):
        def __getitem__(self, idx):
            if isinstance(idx, torch.Tensor):
                return [list.__getitem__(self, int(i)) for i in idx]
            return list.__getitem__(self, idx)

    result = cross_validate(lambda i: TinyGIN(), Indexable(dataset), folds,
                            epochs=15, batch_size=8, lr=0.05,
                            progress=lambda: calls.append(1))
    assert len(result.test_accs) == 4 and len(calls) == 4
    assert all(1 <= e <= 15 for e in result.epochs)
    assert result.summary.mean > 0.8


def test_graph_training_selects_only_admissible_epochs():
    dataset = toy_dataset()
    labels = torch.tensor([int(d.y) for d in dataset])
    train, val, test = stratified_folds(labels, folds=4, seed=0)[0]

    class Indexable(list):
        def __getitem__(self, idx):
            if isinstance(idx, torch.Tensor):
                return [list.__getitem__(self, int(i)) for i in idx]
            return list.__getitem__(self, idx)

    torch.manual_seed(0)
    model = TinyGIN()
    seen = []

    def after_epoch_three(m):
        seen.append(1)
        return len(seen) >= 3

    _, _, epoch, curve = train_graph_classifier(
        model, Indexable(dataset), (train, val, test), epochs=6,
        batch_size=8, lr=0.05, admissible=after_epoch_three)
    assert len(seen) == 6 and epoch >= 3
    best = max(acc for e, _, acc in curve if e >= 3)
    assert curve[epoch - 1][2] == best
