import pytest
import torch
from torch_geometric.data import Data
from torch_geometric.nn.models import GCN

from pyg_qgnn.train import evaluate_nodes, train_node_classifier


def two_community_graph(n=40, seed=0):
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, 8, generator=gen) + 2.0 * y.view(-1, 1).float()
    same = y.view(-1, 1) == y.view(1, -1)
    rand = torch.rand(n, n, generator=gen) < 0.2
    edge_index = (same & rand).nonzero().t()
    idx = torch.randperm(n, generator=gen)
    masks = [torch.zeros(n, dtype=torch.bool) for _ in range(3)]
    masks[0][idx[:10]] = True
    masks[1][idx[10:20]] = True
    masks[2][idx[20:]] = True
    return Data(x=x, edge_index=edge_index, y=y, train_mask=masks[0],
                val_mask=masks[1], test_mask=masks[2])


def test_learns_and_restores_the_selected_epoch():
    data = two_community_graph()
    torch.manual_seed(0)
    model = GCN(8, 16, num_layers=2, out_channels=2)
    result = train_node_classifier(model, data, epochs=30)
    assert len(result.history) == 30
    assert 1 <= result.epoch <= 30
    best_val = max(val for _, _, val in result.history)
    assert result.val_acc == best_val
    # The restored weights are those of the selected epoch.
    assert evaluate_nodes(model, data) == (result.val_acc, result.test_acc)
    assert result.test_acc > 0.8


def test_penalty_enters_the_loss():
    data = two_community_graph()
    torch.manual_seed(0)
    model = GCN(8, 16, num_layers=2, out_channels=2)
    result = train_node_classifier(
        model, data, epochs=2,
        penalty=lambda m: 100.0 + 0 * next(m.parameters()).sum())
    assert all(loss > 100.0 for _, loss, _ in result.history)


def test_uses_edge_weight_when_present():
    data = two_community_graph()
    data.edge_weight = torch.zeros(data.num_edges)
    seen = {}

    class Spy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(8, 2)

        def forward(self, x, edge_index, edge_weight=None):
            seen['w'] = edge_weight
            return self.lin(x)

    train_node_classifier(Spy(), data, epochs=1)
    assert seen['w'] is data.edge_weight


def test_rejects_nonpositive_epochs():
    with pytest.raises(ValueError, match="'epochs'"):
        train_node_classifier(torch.nn.Linear(1, 1), two_community_graph(), 0)


def test_selection_keeps_to_admissible_epochs():
    from pyg_qgnn.train.node import Selection

    model = torch.nn.Linear(2, 2)
    selection = Selection(admissible=lambda m: bool(m.bias[0] > 0))
    offers = [(-1.0, 0.9), (1.0, 0.5), (-1.0, 0.95), (2.0, 0.6), (3.0, 0.6)]
    chosen = []
    for epoch, (bias, score) in enumerate(offers, 1):
        with torch.no_grad():
            model.bias.fill_(bias)
        chosen.append(selection.offer(model, score, epoch))
    # Epoch 1 is best until an admissible one appears; inadmissible epochs
    # never win afterwards, however good; ties keep the first.
    assert chosen == [True, True, False, True, False]
    assert (selection.epoch, selection.score) == (4, 0.6)
    assert float(selection.state['bias'][0]) == 2.0


def test_without_admissible_epochs_selection_uses_all():
    from pyg_qgnn.train.node import Selection

    data = two_community_graph()
    torch.manual_seed(0)
    model = GCN(8, 16, num_layers=2, out_channels=2)
    result = train_node_classifier(model, data, epochs=10,
                                   admissible=lambda m: False)
    assert result.val_acc == max(val for _, _, val in result.history)
