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


def test_without_admissible_epochs_selection_uses_all():
    data = two_community_graph()
    torch.manual_seed(0)
    model = GCN(8, 16, num_layers=2, out_channels=2)
    result = train_node_classifier(model, data, epochs=10,
                                   admissible=lambda m: False)
    assert result.val_acc == max(val for _, _, val in result.history)


def test_teacher_logits_enter_the_loss():
    from pyg_qgnn.distill import distillation_loss

    data = two_community_graph()
    teacher = torch.randn(data.num_nodes, 2, generator=torch.Generator()
                          .manual_seed(1))
    torch.manual_seed(0)
    model = GCN(8, 16, num_layers=2, out_channels=2)
    with torch.no_grad():  # no dropout: the first step's output
        out = model(data.x, data.edge_index)[data.train_mask]
    mask = data.train_mask
    expected = distillation_loss(out, teacher[mask], data.y[mask], 2.0, 0.7)
    result = train_node_classifier(model, data, epochs=1,
                                   teacher_logits=teacher, temperature=2.0,
                                   alpha=0.7)
    assert result.history[0][1] == pytest.approx(float(expected), rel=1e-6)
    # alpha = 0 leaves the cross-entropy alone, whatever the teacher says.
    runs = []
    for teacher_logits in (None, teacher):
        torch.manual_seed(0)
        model = GCN(8, 16, num_layers=2, out_channels=2)
        runs.append(train_node_classifier(model, data, epochs=3,
                                          teacher_logits=teacher_logits,
                                          alpha=0.0).history)
    assert runs[0] == runs[1]


@pytest.mark.parametrize('kwargs,argument', [
    (dict(teacher_logits=torch.zeros(39, 2)), "'teacher_logits'"),
    (dict(teacher_logits=torch.zeros(40)), "'teacher_logits'"),
    (dict(alpha=1.5), "'alpha'"),
    (dict(temperature=0.0), "'temperature'"),
])
def test_bad_distillation_arguments_are_named(kwargs, argument):
    model = GCN(8, 16, num_layers=2, out_channels=2)
    with pytest.raises(ValueError, match=argument):
        train_node_classifier(model, two_community_graph(), 1, **kwargs)


def test_latent_binary_weights_stay_clipped():
    from pyg_qgnn.nn import BinGraphSAGE
    from pyg_qgnn.quantizers.binary import latent_binary_weights

    data = two_community_graph()
    torch.manual_seed(0)
    model = BinGraphSAGE(8, 16, num_layers=2, out_channels=2)
    # Adam moves each weight by about the learning rate per step: without
    # clipping, a step of 2 leaves [-1, 1].
    train_node_classifier(model, data, epochs=3, lr=2.0, weight_decay=0.0)
    weights = latent_binary_weights(model)
    assert len(weights) == 4  # lin_l and lin_r of both layers
    assert all(float(w.detach().abs().max()) <= 1.0 for w in weights)
