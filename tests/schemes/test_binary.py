"""Tests of the Binary() scheme: quantize_model swaps SAGEConv, EdgeConv,
DynamicEdgeConv and linear layers of any PyG model for binary twins that
keep the float weights as latent weights."""
import pytest
import torch
import torch.nn.functional as F
import torch_geometric.typing
from torch import nn
from torch_geometric.nn import DynamicEdgeConv, EdgeConv, GCNConv, SAGEConv
from torch_geometric.nn import Linear as PyGLinear
from torch_geometric.nn.models import GraphSAGE

from pyg_qgnn import (
    QAT,
    Binary,
    BinEdgeConv,
    BinLinear,
    BinSAGEConv,
    DynamicBinEdgeConv,
    QuantSAGEConv,
    disable_fake_quant,
    quantize_model,
    register_binary_layer,
)
from pyg_qgnn.quantizers import (
    SignQuantizer,
    latent_binary_weights,
    register_latent_weight_clipping,
)
from pyg_qgnn.schemes import BINARY_LAYERS


def graph(num_nodes=20, num_edges=60, channels=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(num_nodes, channels, generator=gen)
    edge_index = torch.randint(num_nodes, (2, num_edges), generator=gen)
    return x, edge_index


def signs(module):
    r"""``(input, weight)``: whether each binarizes."""
    return (getattr(module, 'input_quantizer', None) is not None,
            getattr(module, 'weight_quantizer', None) is not None)


@pytest.mark.parametrize('jk', [None, 'cat'])
def test_graph_sage_every_layer_swapped_weights_kept(jk):
    torch.manual_seed(0)
    model = GraphSAGE(8, 16, num_layers=3, out_channels=4, jk=jk)
    binary = quantize_model(model, Binary())
    assert all(type(conv) is BinSAGEConv for conv in binary.convs)
    left = [name for name, m in binary.named_modules()
            if type(m) in (SAGEConv, nn.Linear, PyGLinear)]
    assert left == []
    if jk is not None:
        assert type(binary.lin) is BinLinear
    state = binary.state_dict()
    for key, value in model.state_dict().items():  # the latent weights
        assert torch.equal(state[key], value), key
    latent = {id(w) for w in latent_binary_weights(binary)}
    assert {id(c.lin_l.weight) for c in binary.convs} <= latent
    layers = list(binary.convs) + ([binary.lin] if jk else [])
    # The first layer sees real features; every weight is binary.
    assert [signs(layer) for layer in layers] == \
        [(False, True)] + [(True, True)] * (len(layers) - 1)


def test_binarization_off_without_norm_gives_the_float_model():
    torch.manual_seed(0)
    x, edge_index = graph()
    model = GraphSAGE(8, 16, num_layers=2, out_channels=4, jk='cat').eval()
    binary = quantize_model(model, Binary(batch_norm=False)).eval()
    out = binary(x, edge_index)
    binary.apply(disable_fake_quant)
    expected = model(x, edge_index)
    assert not torch.allclose(out, expected, atol=1e-2)
    torch.testing.assert_close(binary(x, edge_index), expected,
                               atol=1e-5, rtol=1e-5)


def test_options_keep_the_last_weights_real_and_set_the_block():
    model = GraphSAGE(8, 16, num_layers=3, out_channels=4)
    binary = quantize_model(model, Binary(keep_first_input_real=False,
                                          keep_last_weight_real=True,
                                          batch_norm=False,
                                          activation='prelu'))
    assert [signs(c) for c in binary.convs] == \
        [(True, True), (True, True), (True, False)]
    assert binary.convs[-1].lin_r.weight_quantizer is None
    assert all(c.norm is None and c.activation_name == 'prelu'
               for c in binary.convs)


def test_fine_tuning_a_binarized_model_trains():
    torch.manual_seed(0)
    x, edge_index = graph(num_nodes=60, num_edges=240)
    y = (x[:, 0] > 0).long()
    binary = quantize_model(GraphSAGE(8, 32, 2, 2), Binary())
    optimizer = torch.optim.Adam(binary.parameters(), lr=0.01)
    register_latent_weight_clipping(optimizer, binary)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = F.cross_entropy(binary(x, edge_index), y)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]
    assert all(float(w.detach().abs().max()) <= 1.0
               for w in latent_binary_weights(binary))


# Edge convolutions and linear layers #########################################


@pytest.mark.parametrize('network', [
    lambda: nn.Linear(12, 5),
    lambda: PyGLinear(12, 5, bias=False),
    lambda: nn.Sequential(nn.Linear(12, 5, bias=False), nn.BatchNorm1d(5),
                          nn.LeakyReLU(0.2)),  # DGCNN's block
])
def test_edge_conv_takes_the_one_linear_layer(network):
    torch.manual_seed(0)
    conv = EdgeConv(network(), aggr='mean')
    linear = next(m for m in conv.nn.modules()
                  if isinstance(m, (nn.Linear, PyGLinear)))
    binary = quantize_model(nn.ModuleList([conv, nn.Linear(5, 3)]),
                            Binary(keep_first_input_real=False))
    twin = binary[0]
    assert type(twin) is BinEdgeConv and twin.aggr == 'mean'
    assert (twin.in_channels, twin.out_channels) == (6, 5)
    assert torch.equal(twin.nn.weight, linear.weight)
    assert (twin.nn.bias is None) == (linear.bias is None)
    assert signs(twin.nn) == (True, True)
    assert type(binary[1]) is BinLinear
    x, edge_index = graph(channels=6)
    assert twin(x, edge_index).shape == (20, 5)


def test_dynamic_edge_conv_becomes_dynamic_bin_edge_conv(monkeypatch):
    # PyG builds DynamicEdgeConv only with pyg-lib; its twin needs neither.
    monkeypatch.setattr(torch_geometric.typing, 'WITH_KNN', True)
    model = nn.ModuleList([DynamicEdgeConv(nn.Linear(6, 8), k=4),
                           DynamicEdgeConv(nn.Linear(16, 8), k=4)])
    binary = quantize_model(model, Binary())
    assert all(type(conv) is DynamicBinEdgeConv and conv.k == 4
               for conv in binary)
    assert signs(binary[0].nn) == (False, True)  # coordinates stay real
    assert binary[1](torch.randn(10, 8)).shape == (10, 8)


def test_bare_layers():
    assert type(quantize_model(nn.Linear(4, 3), Binary())) is BinLinear
    conv = quantize_model(SAGEConv(4, 3), Binary())
    assert type(conv) is BinSAGEConv
    assert signs(conv) == (False, True)  # a bare layer is the first one


@pytest.mark.parametrize('network,error,message', [
    (lambda: nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 5)),
     TypeError, 'holds 2 linear layers'),
    (lambda: nn.Linear(7, 5), ValueError, '2 \\* in_channels'),
])
def test_edge_networks_without_a_binary_form_are_named(network, error,
                                                       message):
    with pytest.raises(error, match=message):
        quantize_model(EdgeConv(network()), Binary())


# The registry ################################################################


def test_schemes_keep_their_own_registries():
    model = GraphSAGE(8, 16, num_layers=2)
    assert type(quantize_model(model, QAT()).convs[0]) is QuantSAGEConv
    assert type(quantize_model(model, Binary()).convs[0]) is BinSAGEConv
    assert Binary().twin_class(SAGEConv) is BinSAGEConv
    assert QAT().twin_class(SAGEConv) is QuantSAGEConv
    assert Binary().twin_class(GCNConv) is None
    assert Binary().supported_layers() == [
        'DynamicEdgeConv', 'EdgeConv', 'Linear', 'SAGEConv']


def test_unsupported_layer_names_binary_layers():
    model = nn.ModuleList([GCNConv(8, 8)])
    with pytest.raises(TypeError, match="layer '0' \\(GCNConv\\): supported "
                       "layers are DynamicEdgeConv, EdgeConv, Linear, "
                       "SAGEConv"):
        quantize_model(model, Binary())


def test_binarizing_twice_keeps_the_layers():
    binary = quantize_model(GraphSAGE(8, 16, num_layers=2), Binary())
    again = quantize_model(binary, Binary(keep_first_input_real=False))
    assert [signs(c) for c in again.convs] == [signs(c)
                                                for c in binary.convs]


def test_register_binary_layer(monkeypatch):
    monkeypatch.setattr('pyg_qgnn.schemes.binary.BINARY_LAYERS',
                        dict(BINARY_LAYERS))

    class MySAGE(SAGEConv):
        pass

    from pyg_qgnn.schemes import binary as binary_module
    register_binary_layer(MySAGE, BinSAGEConv)  # default: from_float
    assert MySAGE in binary_module.BINARY_LAYERS
    twin = quantize_model(nn.ModuleList([MySAGE(4, 3), MySAGE(3, 3)]),
                          Binary())[1]
    assert type(twin) is BinSAGEConv
    assert isinstance(twin.input_quantizer, SignQuantizer)
    with pytest.raises(TypeError, match="'binary_cls' must be a QuantLayer"):
        register_binary_layer(MySAGE, SAGEConv)
    with pytest.raises(TypeError, match="'build' must be callable"):
        register_binary_layer(MySAGE, BinSAGEConv, build=3)


@pytest.mark.parametrize('kwargs,error,message', [
    (dict(keep_first_input_real=1), TypeError,
     "'keep_first_input_real' must be a bool"),
    (dict(batch_norm=None), TypeError, "'batch_norm' must be a bool"),
    (dict(activation='tanh'), ValueError, "'activation' must be one of"),
])
def test_bad_arguments_are_named(kwargs, error, message):
    with pytest.raises(error, match=message):
        Binary(**kwargs)
