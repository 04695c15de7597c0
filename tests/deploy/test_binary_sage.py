"""Tests of the deployed BinSAGEConv and BinGraphSAGE
(pyg_qgnn.deploy.binary_sage): bit for bit the fake-quantized twins in
evaluation, on float features and on the int8 or packed signs of a previous layer, in
every adjacency format and on every exact path; integer aggregation where
the features are signs; safe save and load; at least 20x smaller than
float."""
import dataclasses
import pickle

import pytest
import torch
import torch_geometric.typing
from safetensors import safe_open
from torch_geometric.data import Data
from torch_geometric.loader import NeighborLoader
from torch_geometric.nn.models import GraphSAGE

from pyg_qgnn import BinGraphSAGE, BinSAGEConv, set_binarization_stage
from pyg_qgnn.deploy import (
    DeployedBinSAGEConv,
    backend,
    binary_ops,
    convert,
    integer_aggregate,
    load,
    nbytes,
    save,
)
from pyg_qgnn.deploy import binary_sage
from pyg_qgnn.quantizers import SignQuantizer
from pyg_qgnn.quantizers.binary import pack_signs, unpack_signs
from tests.deploy.test_binary import trained
from tests.nn.conv.test_quant_gin_conv import FORMATS, adjacency

pytestmark = pytest.mark.usefixtures('one_thread')


def graph(num_nodes=24, num_edges=70, channels=8, seed=0):
    r"""Random features and edges among all but the last 4 nodes
    (isolated), 8 edges repeated and a self-loop at every 5th node."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(num_nodes, channels, generator=gen)
    edges = torch.randint(num_nodes - 4, (2, num_edges), generator=gen)
    loops = torch.arange(0, num_nodes - 4, 5).repeat(2, 1)
    return x, torch.cat([edges, edges[:, :8], loops], dim=1)


def signs(x):
    r"""The :math:`\pm 1` floats a twin sees and the :obj:`int8` codes a
    deployed layer gets for them."""
    values = torch.where(x >= 0, 1.0, -1.0)
    return values, values.to(torch.int8)


def values(out, channels):
    r"""A deployed output as the twin's floats: packed signs unpacked."""
    if out.dtype == torch.uint8:
        out = unpack_signs(out, channels)
    return out.to(torch.float32) if out.dtype == torch.int8 else out


def assert_deployed_equals(twin, x, adj, codes=None):
    r"""The deployed form of :obj:`twin` on :obj:`codes` (default:
    :obj:`x`), and on them packed where they are :obj:`int8` signs, gives
    exactly what :obj:`twin` gives on :obj:`x`."""
    deployed = convert(twin)
    expected = twin(x, adj)
    inputs = [x if codes is None else codes]
    if codes is not None and codes.dtype == torch.int8:
        inputs.append(pack_signs(codes))
    for features in inputs:
        out = deployed(features, adj)
        assert not out.requires_grad
        assert torch.equal(values(out, expected.size(-1)), expected)
    return deployed


LAYERS = [
    dict(),
    dict(aggr='max'),
    dict(aggr='sum', output_quantizer='sign'),
    dict(root_weight=False, bias=False),
    dict(activation=None, output_quantizer='sign'),
    dict(activation='relu', normalize=True),
    dict(project=True),
    dict(input_quantizer=None, batch_norm=False),  # a first layer
    dict(input_quantizer=None, root_weight=False, aggr='sum'),
    dict(input_quantizer=None, aggr='max'),
    dict(weight_quantizer=None),  # real weights
    dict(batch_norm=False),
    dict(input_quantizer=SignQuantizer(balance='mean')),  # no thresholds
]


@pytest.mark.parametrize('binary_input', [False, True])
@pytest.mark.parametrize('kwargs', LAYERS)
def test_layer_equals_twin(kwargs, binary_input):
    x, edge_index = graph()
    twin = trained(BinSAGEConv(8, 6, **kwargs), x, edge_index)
    codes = None
    if binary_input:
        x, codes = signs(torch.randn_like(x))
    deployed = assert_deployed_equals(twin, x, edge_index, codes)
    assert isinstance(deployed, DeployedBinSAGEConv)
    assert (deployed.weight_packed is not None) == \
        (kwargs.get('weight_quantizer', 'sign') is not None)


@pytest.mark.parametrize('fmt', FORMATS)
@pytest.mark.parametrize('aggr', ['mean', 'max', 'sum'])
def test_every_adjacency_format_equals_twin(aggr, fmt):
    x, edge_index = graph()
    adj = adjacency(edge_index, fmt, 24)
    twin = trained(BinSAGEConv(8, 6, aggr=aggr, output_quantizer='sign'),
                   x, adj)
    assert_deployed_equals(twin, x, adj)
    values, codes = signs(x)
    assert_deployed_equals(twin, values, adj, codes)


@pytest.mark.parametrize('fmt', ['edge_index', 'sparse_tensor'])
def test_bipartite_codes_equal_twin(fmt):
    if fmt == 'sparse_tensor' and not torch_geometric.typing.WITH_TORCH_SPARSE:
        pytest.skip('torch_sparse is not installed')
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(15, 8, generator=gen), torch.randn(6, 4, generator=gen))
    edge_index = torch.stack([torch.randint(15, (30, ), generator=gen),
                              torch.randint(5, (30, ), generator=gen)])
    adj = adjacency(edge_index, fmt, 15, 6)
    twin = trained(BinSAGEConv((8, 4), 5), x, adj)
    (src, src_codes), (dst, dst_codes) = signs(x[0]), signs(x[1])
    deployed = convert(twin)
    size = (15, 6) if fmt == 'edge_index' else None
    assert torch.equal(deployed((src_codes, dst_codes), adj, size),
                       twin((src, dst), adj, size))


def flips(scale):
    r"""-1 where a batch norm (or rescaling) decreases, else 1."""
    weight = scale.weight if isinstance(scale, torch.nn.Module) else scale
    return torch.where(weight.detach() < 0, -1, 1).to(torch.int8)


@pytest.mark.parametrize('weight_quantizer', ['sign', None])
def test_flipped_input_channels_equal_twin(weight_quantizer):
    x, edge_index = graph()
    twin = trained(BinSAGEConv(8, 6, weight_quantizer=weight_quantizer),
                   x, edge_index)
    with torch.no_grad():
        twin.norm.weight[::2] *= -1  # decreasing: flipped weight columns
    deployed = assert_deployed_equals(twin, x, edge_index)
    weight = twin.binary_weight()
    stored = deployed.weight if weight_quantizer is None else \
        deployed.weight_codes()
    if weight_quantizer is not None:
        weight = torch.where(weight >= 0, 1, -1).to(torch.int8)
    assert torch.equal(stored, weight * flips(twin.norm).to(weight.dtype))


def test_flipped_and_constant_channels_equal_twin():
    x, edge_index = graph()
    twin = trained(BinSAGEConv(8, 6, activation=None,
                               output_quantizer='sign'), x, edge_index)
    with torch.no_grad():
        twin.norm.weight[::2] *= -1  # decreasing: flipped weight columns
        twin.rescale.alpha[::3] *= -1  # decreasing outputs: flipped signs
    deployed = assert_deployed_equals(twin, x, edge_index)
    assert deployed.norm is None and deployed.rescale is None
    assert torch.equal(deployed.output_flips, flips(twin.rescale.alpha))
    with torch.no_grad():  # constant signs (finite inputs)
        twin.norm.weight[1] = 0.0
        twin.rescale.alpha[1] = 0.0
    assert_deployed_equals(twin, x, edge_index)


def test_without_threshold_form_the_normalization_stays(monkeypatch):
    monkeypatch.setattr(binary_sage, 'sign_thresholds', lambda *a: None)
    x, edge_index = graph()
    twin = trained(BinSAGEConv(8, 6, output_quantizer='sign'), x, edge_index)
    values, codes = signs(x)
    deployed = assert_deployed_equals(twin, values, edge_index, codes)
    assert deployed.thresholds is None and deployed.norm is not None
    assert deployed.output_thresholds is None
    assert deployed.rescale is not None


@pytest.mark.parametrize('kwargs', [
    dict(normalize=True),  # a row-wise map before the sign
    dict(output_quantizer=SignQuantizer(balance='median')),
])
def test_output_sign_without_thresholds_equals_twin(kwargs):
    kwargs = dict(dict(output_quantizer='sign'), **kwargs)
    x, edge_index = graph()
    twin = trained(BinSAGEConv(8, 6, **kwargs), x, edge_index)
    deployed = assert_deployed_equals(twin, x, edge_index)
    assert deployed.output_thresholds is None
    assert deployed.rescale is not None and deployed.activation is not None


@pytest.mark.parametrize('path', ['native', 'torch'])
def test_signs_are_aggregated_as_integers(monkeypatch, path):
    if path == 'native' and backend().packed_bits != 'native':
        pytest.skip('no C compiler for the packed-bit kernels')
    calls = []

    def recording(name, original):
        def record(features, *args, **kwargs):
            calls.append((name, features.dtype))
            return original(features, *args, **kwargs)
        return record

    for name in ('aggregate_codes', 'aggregate_bits'):
        monkeypatch.setattr(binary_sage, name,
                            recording(name, getattr(binary_sage, name)))
    chosen = dataclasses.replace(backend(), packed_bits=path)
    monkeypatch.setattr(binary_sage, 'backend', lambda: chosen)
    # int8 codes and the same packed: packed bits or int8 codes, by path.
    expected = [('aggregate_bits', torch.uint8)] * 2 if path == 'native' \
        else [('aggregate_codes', torch.int8)] * 2
    x, edge_index = graph()
    twin = trained(BinSAGEConv(8, 6), x, edge_index)
    values, codes = signs(x)
    for fmt in FORMATS:
        calls.clear()
        adj = adjacency(edge_index, fmt, 24)
        assert_deployed_equals(twin, values, adj, codes)
        assert calls == expected
    # Coalesced, repeated edges are values above 1, which SAGEConv weights:
    # floats, as the twin computes them.
    calls.clear()
    weighted = torch.sparse_coo_tensor(
        edge_index.flip(0), torch.ones(edge_index.size(1)), (24, 24))
    weighted = weighted.coalesce()
    assert float(weighted.values().max()) > 1.0
    assert_deployed_equals(twin, values, weighted, codes)
    assert calls == []
    assert_deployed_equals(twin, x, edge_index)  # real features
    assert calls == []


@pytest.mark.parametrize('aggr', ['mean', 'max', 'sum'])
def test_float_aggregation_is_pyg_scatter_bit_for_bit(aggr):
    # The CSR product adds each target's sources in edge order, as the
    # scatter of PyG (and so the twin) does.
    x, edge_index = graph(num_nodes=300, num_edges=3000, channels=32)
    twin = BinSAGEConv(32, 4, aggr=aggr).eval()
    deployed = convert(twin)
    out = deployed.aggregate_features(x, x, edge_index, None)
    assert torch.equal(out, twin.propagate(edge_index, x=(x, x)))


def test_graph_shared_by_layers_and_changed_in_place():
    x, edge_index = graph()
    model = trained(BinGraphSAGE(8, 16, 3, 4), x, edge_index)
    deployed = convert(model)
    assert torch.equal(deployed(x, edge_index), model(x, edge_index))
    edge_index[0, :30] = edge_index[0, :30].flip(0)  # same tensor, new graph
    assert torch.equal(deployed(x, edge_index), model(x, edge_index))
    other = torch.cat([edge_index, edge_index[:, :5].flip(0)], dim=1)
    assert torch.equal(deployed(x, other), model(x, other))


def test_graph_made_in_inference_mode():
    # Inference tensors have no version counter to tell a changed graph.
    x, edge_index = graph()
    model = trained(BinGraphSAGE(8, 16, 3, 4), x, edge_index)
    deployed = convert(model)
    expected = model(x, edge_index)
    with torch.inference_mode():
        edges = edge_index.clone()
        assert torch.equal(deployed(x, edges), expected)
        edges[0, :30] = edges[0, :30].flip(0)
        assert torch.equal(deployed(x, edges), model(x, edges))


@pytest.mark.parametrize('matmul', ['torch', 'popcount'])
def test_reference_paths_give_the_same_output(monkeypatch, matmul):
    x, edge_index = graph()
    model = trained(BinGraphSAGE(8, 16, 3, 4), x, edge_index)
    deployed = convert(model)
    fast = deployed(x, edge_index)
    slow = dataclasses.replace(backend(), binary_matmul=matmul,
                               int8_aggregate='torch', packed_bits='torch',
                               float_aggregate='torch')
    for module in (binary_ops, integer_aggregate, binary_sage):
        monkeypatch.setattr(module, 'backend', lambda: slow)
    assert torch.equal(deployed(x, edge_index), fast)


# BinGraphSAGE ################################################################


@pytest.mark.parametrize('kwargs', [
    dict(),
    dict(binary_features=False),
    dict(keep_last_weight_real=True, keep_first_input_real=False),
    dict(aggr='max', activation='prelu'),
])
def test_bin_graph_sage_equals_twin(kwargs):
    x, edge_index = graph()
    model = trained(BinGraphSAGE(8, 16, 3, 4, **kwargs), x, edge_index)
    deployed = assert_deployed_equals(model, x, edge_index)
    assert all(isinstance(c, DeployedBinSAGEConv) for c in deployed.convs)
    hidden = deployed.convs[0](x, edge_index)
    binary = kwargs.get('binary_features', True)
    assert (hidden.dtype == torch.uint8) == binary  # packed signs


@pytest.mark.skipif(not (torch_geometric.typing.WITH_PYG_LIB
                         or torch_geometric.typing.WITH_TORCH_SPARSE),
                    reason='NeighborLoader needs pyg-lib or torch_sparse')
def test_layerwise_inference_equals_twin():
    x, edge_index = graph(num_nodes=40, num_edges=150)
    model = trained(BinGraphSAGE(8, 16, 3, 4), x, edge_index)
    loader = NeighborLoader(Data(x=x, edge_index=edge_index),
                            num_neighbors=[-1], batch_size=16)
    assert torch.equal(convert(model).inference(loader),
                       model.inference(loader))


def test_model_is_at_least_20x_smaller_than_float():
    # The paper's OGB-Products shape: 100 features, 47 classes.
    float_bytes = nbytes(GraphSAGE(100, 256, 3, 47))
    deployed = convert(BinGraphSAGE(100, 256, 3, 47).eval())
    assert float_bytes / nbytes(deployed) >= 20
    real_last = convert(BinGraphSAGE(100, 256, 3, 47,
                                     keep_last_weight_real=True).eval())
    assert nbytes(real_last) > 2 * nbytes(deployed)  # its float weight


def test_save_load_round_trip_is_bit_exact(tmp_path, monkeypatch):
    x, edge_index = graph()
    deployed = convert(trained(BinGraphSAGE(8, 16, 3, 4), x, edge_index))
    path = tmp_path / 'binsage.safetensors'
    assert save(deployed, path) == path.stat().st_size
    with safe_open(str(path), framework='pt') as f:
        packed = [k for k in f.keys() if k.endswith('weight_packed')]
        assert len(packed) == 3
        assert all(f.get_tensor(k).dtype == torch.uint8 for k in packed)

    def forbidden(*args, **kwargs):
        raise AssertionError('pickle used while loading')

    monkeypatch.setattr(pickle, 'loads', forbidden)
    monkeypatch.setattr(torch, 'load', forbidden)
    torch.manual_seed(1)
    fresh = convert(BinGraphSAGE(8, 16, 3, 4).eval())
    assert load(path, fresh) is fresh
    for key, value in deployed.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    assert torch.equal(fresh(x, edge_index), deployed(x, edge_index))


# Bad input ###################################################################


def test_bad_features_are_named():
    x, edge_index = graph()
    deployed = convert(trained(BinSAGEConv(8, 6), x, edge_index))
    codes = signs(x)[1]
    codes[3, 2] = 0
    with pytest.raises(ValueError, match="'x' is an int8 tensor.*other"):
        deployed(codes, edge_index)
    with pytest.raises(TypeError, match="'x' must hold float32"):
        deployed(x.double(), edge_index)
    odd = convert(trained(BinSAGEConv(5, 6), x[:, :5], edge_index))
    packed = pack_signs(signs(x[:, :5])[1])
    with pytest.raises(ValueError, match="packed signs of 5 channels.*1 "
                       "bytes per row \\(got 2"):
        odd(torch.cat([packed, packed], 1), edge_index)
    packed[1, 0] |= 0x80  # a padding bit
    with pytest.raises(ValueError, match="'x' has nonzero padding bits"):
        odd(packed, edge_index)
    with pytest.raises(ValueError, match="'x' must be a \\(nodes, features"):
        deployed(x.unsqueeze(0), edge_index)
    with pytest.raises(ValueError, match="x_dst not None"):
        deployed((x, None), edge_index)
    x[0, 0] = float('inf')
    with pytest.raises(ValueError, match="'x' contains NaN or Inf"):
        deployed(x, edge_index)


def test_untrainable_forms_are_refused():
    x, edge_index = graph()
    twin = trained(BinSAGEConv(8, 6), x, edge_index)
    with pytest.raises(ValueError, match="relaxed"):
        convert(set_binarization_stage(twin, 1))
    with pytest.raises(ValueError, match="computes in float32"):
        convert(BinSAGEConv(8, 6).double().eval())


def test_repr_names_what_stays_float():
    x, edge_index = graph()
    model = trained(BinGraphSAGE(8, 16, 3, 4), x, edge_index)
    first, middle, last = convert(model).convs
    assert repr(first) == (
        "DeployedBinSAGEConv((8, 8), 16, aggr='mean', weight=1-bit packed, "
        "h=float, output=packed signs, float=['output_thresholds'])")
    assert repr(last) == (
        "DeployedBinSAGEConv((16, 16), 4, aggr='mean', weight=1-bit packed, "
        "h=thresholds, output=float, float=['rescale', 'bias', "
        "'thresholds'])")
