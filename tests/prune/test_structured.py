import pytest
import torch
from torch import nn
from torch_geometric.nn.models import GAT, GCN, GIN, MLP, GraphSAGE

from pyg_qgnn.prune import magnitude_prune, prune_channels
from tests.prune.helpers import random_graph


def zero_channels(rows, channels, norm=None):
    r"""Makes :obj:`channels` of a layer contribute nothing: zero weight
    rows and bias, and a following batch norm that maps zero to zero."""
    with torch.no_grad():
        for tensor in rows:
            tensor[channels] = 0
        if norm is not None:
            norm.bias[channels] = 0
            norm.running_mean[channels] = 0


def dead_gcn():
    torch.manual_seed(0)
    model = GCN(8, 16, num_layers=3, out_channels=3).eval()
    for conv in model.convs[:2]:
        zero_channels([conv.lin.weight, conv.bias], list(range(0, 16, 2)))
    return model


def dead_sage():
    torch.manual_seed(0)
    model = GraphSAGE(8, 16, num_layers=2, out_channels=3).eval()
    conv = model.convs[0]
    zero_channels([conv.lin_l.weight, conv.lin_l.bias, conv.lin_r.weight],
                  list(range(8)))
    return model


def dead_gin():
    torch.manual_seed(0)
    model = GIN(8, 16, num_layers=2, out_channels=3, norm='batch_norm').eval()
    with torch.no_grad():  # non-trivial statistics on the kept channels
        for module in model.modules():
            if isinstance(module, nn.BatchNorm1d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
                module.bias.uniform_(-1, 1)
    for conv, norm in zip(model.convs, model.norms):
        lins = conv.nn.lins
        hidden = lins[0].out_channels  # 16, and 3 in the last layer
        zero_channels([lins[0].weight, lins[0].bias],
                      list(range(0, hidden, 2)) if hidden == 16 else [0, 1],
                      conv.nn.norms[0].module)
    zero_channels([model.convs[0].nn.lins[1].weight,
                   model.convs[0].nn.lins[1].bias], list(range(8)),
                  model.norms[0].module)
    return model


@pytest.mark.parametrize('make', [dead_gcn, dead_sage, dead_gin])
def test_removing_zero_channels_keeps_the_function(make):
    model = make()
    x, edge_index = random_graph()
    expected = model(x, edge_index)
    groups = prune_channels(model, 0.5)
    assert all(g.after == g.before - round(0.5 * g.before) for g in groups)
    assert torch.allclose(model(x, edge_index), expected, atol=1e-6)


def test_removing_live_channels_changes_the_function():
    torch.manual_seed(0)
    model = GCN(8, 16, num_layers=3, out_channels=3).eval()
    x, edge_index = random_graph()
    expected = model(x, edge_index)
    prune_channels(model, 0.5)
    assert not torch.allclose(model(x, edge_index), expected, atol=1e-3)


def test_shapes_and_sizes_shrink():
    model = dead_gcn()
    groups = prune_channels(model, 0.5)
    assert [(g.name, g.before, g.after) for g in groups] == [
        ('convs.0', 16, 8), ('convs.1', 16, 8)]
    assert model.convs[0].lin.weight.shape == (8, 8)
    assert model.convs[0].bias.shape == (8, )
    assert model.convs[1].lin.weight.shape == (8, 8)
    assert model.convs[2].lin.weight.shape == (3, 8)
    assert (model.convs[1].in_channels, model.convs[1].out_channels) == (8, 8)
    assert model.convs[2].lin.in_channels == 8
    x, edge_index = random_graph()
    model.train()
    model(x, edge_index).sum().backward()  # still trains


def test_mlp_and_sequential_chains():
    torch.manual_seed(0)
    mlp = MLP([6, 12, 10, 2], norm='batch_norm').eval()
    sequential = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Dropout(0.1),
                               nn.Linear(12, 10), nn.BatchNorm1d(10),
                               nn.ELU(), nn.Linear(10, 2)).eval()
    x = torch.randn(5, 6)
    for model in (mlp, sequential):
        groups = prune_channels(model, 0.25)
        assert [(g.before, g.after) for g in groups] == [(12, 9), (10, 8)]
        assert model(x).shape == (5, 2)
    assert mlp.channel_list == [6, 9, 8, 2]
    assert sequential[4].num_features == 8


def test_lowest_norm_channels_go():
    model = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[3., 0.], [0., .1], [2., 2.],
                                            [.2, 0.]]))
        model[0].bias.zero_()
    prune_channels(model, 0.5)
    assert torch.equal(model[0].weight, torch.tensor([[3., 0.], [2., 2.]]))


@pytest.mark.parametrize('model,match', [
    (GAT(8, 16, num_layers=2, out_channels=3), 'GATConv'),
    (GCN(8, 16, num_layers=2, out_channels=3, jk='cat'),
     'jumping knowledge'),
    (GCN(8, 16, num_layers=2, out_channels=3, norm='layer_norm'),
     'batch normalization'),
    (nn.Linear(4, 4), 'no hidden channels'),
])
def test_unsupported_models_are_clear_errors(model, match):
    with pytest.raises(ValueError, match=match):
        prune_channels(model, 0.5)


def test_masked_model_and_bad_amount_are_errors():
    model = magnitude_prune(GCN(8, 16, 2, 3), 0.5)
    with pytest.raises(ValueError, match='make_permanent'):
        prune_channels(model, 0.5)
    for amount in (1.0, -0.2, True):
        with pytest.raises(ValueError, match="'amount' must be a fraction"):
            prune_channels(GCN(8, 16, 2, 3), amount)


def test_at_least_one_channel_stays():
    model = GCN(8, 4, num_layers=2, out_channels=3)
    groups = prune_channels(model, 0.99)
    assert groups[0].after == 1
    x, edge_index = random_graph()
    assert model(x, edge_index).shape == (30, 3)
