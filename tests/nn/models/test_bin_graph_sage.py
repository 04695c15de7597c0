"""Tests of BinGraphSAGE: the paper's OGB model as a PyG BasicGNN."""
import pytest
import torch
import torch.nn.functional as F
import torch_geometric.typing
from torch_geometric.data import Data
from torch_geometric.loader import NeighborLoader
from torch_geometric.nn.models import GraphSAGE
from torch_geometric.nn.models.basic_gnn import BasicGNN

from pyg_qgnn.nn import BinGraphSAGE, BinLinear, BinSAGEConv
from pyg_qgnn.quantizers import register_latent_weight_clipping


def graph(num_nodes=30, num_edges=90, channels=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(num_nodes, channels, generator=gen)
    edge_index = torch.randint(num_nodes, (2, num_edges), generator=gen)
    return x, edge_index


def test_defaults_are_the_ogb_baseline_binarized_as_in_the_paper():
    model = BinGraphSAGE(100, out_channels=47)
    assert isinstance(model, BasicGNN)
    assert (model.num_layers, model.hidden_channels, model.dropout.p) == \
        (3, 256, 0.5)
    assert model.act is None
    first, middle, last = model.convs
    assert all(isinstance(c, BinSAGEConv) and c.aggr == 'mean'
               and c.activation is None for c in model.convs)
    # Real input features in, no normalization before them.
    assert first.input_quantizer is None and first.norm is None
    assert middle.input_quantizer is not None and middle.norm is not None
    # Every layer has binary weights; hidden layers output signs.
    assert all(c.weight_quantizer is not None for c in model.convs)
    assert first.output_quantizer is not None
    assert middle.output_quantizer is not None
    assert last.output_quantizer is None and last.out_channels == 47


def test_hidden_features_are_signs_and_logits_real():
    torch.manual_seed(0)
    x, edge_index = graph()
    model = BinGraphSAGE(8, 16, 3, 4)
    outputs = []
    for conv in model.convs:
        conv.register_forward_hook(lambda m, a, out: outputs.append(out))
    out = model(x, edge_index)
    assert out.shape == (30, 4)
    for hidden in outputs[:2]:
        assert bool(((hidden == 1) | (hidden == -1)).all())
    assert not bool(((out == 1) | (out == -1)).all())
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_options_set_each_layer():
    model = BinGraphSAGE(8, 16, 3, 4, binary_features=False, act='relu',
                         keep_first_input_real=False,
                         keep_last_weight_real=True, activation='prelu')
    assert all(c.output_quantizer is None for c in model.convs)
    assert model.convs[0].input_quantizer is not None
    assert model.convs[0].norm is not None
    assert model.convs[-1].weight_quantizer is None
    assert model.convs[1].weight_quantizer is not None
    assert all(c.activation_name == 'prelu' for c in model.convs)
    assert repr(model) == ('BinGraphSAGE(8, 4, num_layers=3, '
                           'hidden_channels=16, binary_features=False)')


def test_jumping_knowledge_and_sage_arguments_read_as_in_graph_sage():
    x, edge_index = graph()
    model = BinGraphSAGE(8, 16, 2, 4, jk='cat', aggr='max', normalize=True)
    ref = GraphSAGE(8, 16, 2, 4, jk='cat')
    assert model(x, edge_index).shape == ref(x, edge_index).shape == (30, 4)
    assert all(c.aggr == 'max' and c.normalize for c in model.convs)
    assert not isinstance(model.lin, BinLinear)  # BasicGNN's own head


@pytest.mark.skipif(not (torch_geometric.typing.WITH_PYG_LIB
                         or torch_geometric.typing.WITH_TORCH_SPARSE),
                    reason='NeighborLoader needs pyg-lib or torch_sparse')
def test_layerwise_inference_with_neighbor_loader_equals_forward():
    torch.manual_seed(0)
    x, edge_index = graph(num_nodes=40, num_edges=150)
    model = BinGraphSAGE(8, 16, 3, 4)
    model(x, edge_index)  # running statistics
    model.eval()
    data = Data(x=x, edge_index=edge_index)
    loader = NeighborLoader(data, num_neighbors=[-1], batch_size=16)
    torch.testing.assert_close(model.inference(loader),
                               model(x, edge_index))


def test_trains_on_a_separable_task():
    torch.manual_seed(0)
    x, edge_index = graph(num_nodes=60, num_edges=240)
    y = (x[:, 0] > 0).long()
    model = BinGraphSAGE(8, 32, 2, 2, dropout=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    register_latent_weight_clipping(optimizer, model)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x, edge_index), y)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize('kwargs,message', [
    (dict(act='relu'), "'act' must be None when 'binary_features'"),
    (dict(num_layers=0), "'num_layers' must be a positive int"),
    (dict(aggr='lstm'), "'aggr' must be one of"),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BinGraphSAGE(8, **kwargs)
