import copy
import inspect

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.nn import GATConv

import pyg_qgnn
from pyg_qgnn import IntegerQuantizer, QuantGATConv, QuantLinear
from tests.nn.conv.test_quant_gcn_conv import calibrated, fq, graph
from tests.nn.conv.test_quant_gin_conv import (
    FORMATS,
    adjacency,
    assert_same,
    forward_backward,
)


def quantizers(bits=8, attention=True, message=True, output=True):
    out = dict(input_quantizer=IntegerQuantizer(bits),
               weight_quantizer=IntegerQuantizer(bits, symmetric=bits >= 2,
                                                 dynamic=True),
               aggregate_quantizer=IntegerQuantizer(bits))
    for point, wanted in (('attention', attention), ('message', message),
                          ('output', output)):
        if wanted:
            out[f'{point}_quantizer'] = IntegerQuantizer(bits)
    return out


def randomized(conv):
    with torch.no_grad():
        if conv.bias is not None:
            conv.bias.normal_()
    return conv


# Float equivalence ###########################################################

GAT_KWARGS = [
    dict(),
    dict(heads=3, concat=False, negative_slope=0.1),
    dict(residual=True, bias=False),
    dict(add_self_loops=False),
    dict(edge_dim=3, fill_value=0.5, residual=True),
]


def edge_features(edge_index, kwargs):
    if kwargs.get('edge_dim') is None:
        return None
    gen = torch.Generator().manual_seed(1)
    return torch.randn(edge_index.size(1), kwargs['edge_dim'], generator=gen)


# GATConv takes edge features with 'edge_index' only.
@pytest.mark.parametrize('kwargs,fmt', [
    (kwargs, fmt) for kwargs in GAT_KWARGS for fmt in FORMATS
    if fmt == 'edge_index' or 'edge_dim' not in kwargs
])
def test_no_quantizers_equals_gat_conv(kwargs, fmt):
    torch.manual_seed(0)
    x, edge_index = graph()
    ref = randomized(GATConv(6, 4, heads=2, **kwargs)
                     if 'heads' not in kwargs else GATConv(6, 4, **kwargs))
    conv = QuantGATConv.from_float(ref)
    assert list(conv.state_dict()) == list(ref.state_dict())
    adj = adjacency(edge_index, fmt, x.size(0))
    edge_attr = edge_features(edge_index, kwargs)
    assert_same(forward_backward(conv, x, adj, edge_attr),
                forward_backward(ref, x, adj, edge_attr))


@pytest.mark.parametrize('fmt', FORMATS)
def test_return_attention_weights_equals_gat_conv(fmt):
    torch.manual_seed(0)
    x, edge_index = graph()
    ref = GATConv(6, 4, heads=2)
    conv = QuantGATConv.from_float(ref)
    adj = adjacency(edge_index, fmt, x.size(0))
    out, attention = conv(x, adj, return_attention_weights=True)
    ref_out, ref_attention = ref(x, adj, return_attention_weights=True)
    assert torch.equal(out, ref_out)
    if fmt == 'sparse_tensor':
        attention, ref_attention = (a.coo() for a in (attention,
                                                      ref_attention))
    for ours, theirs in zip(attention, ref_attention):
        ours, theirs = (t.to_dense() if t.is_sparse or t.is_sparse_csr else t
                        for t in (ours, theirs))
        assert torch.equal(ours, theirs)


@pytest.mark.parametrize('fmt', FORMATS)
def test_disabled_quantizers_equal_gat_conv(fmt):
    torch.manual_seed(0)
    x, edge_index = graph()
    ref = randomized(GATConv(6, 4, heads=2, residual=True, dropout=0.5))
    conv = QuantGATConv(6, 4, heads=2, residual=True, dropout=0.5,
                        **quantizers(4))
    conv.load_state_dict(ref.state_dict(), strict=True)  # lazy state ok
    adj = adjacency(edge_index, fmt, x.size(0))
    assert not torch.allclose(conv.eval()(x, adj), ref.eval()(x, adj))
    conv.apply(pyg_qgnn.disable_fake_quant)
    for mode in (True, False):
        conv.train(mode)
        ref.train(mode)
        torch.manual_seed(1)  # the same dropout masks
        ours = forward_backward(conv, x, adj)
        torch.manual_seed(1)
        assert_same(ours, forward_backward(ref, x, adj))


@pytest.mark.parametrize('fmt', FORMATS)
def test_bipartite_equals_gat_conv(fmt):
    torch.manual_seed(0)
    x = (torch.randn(7, 6), torch.randn(4, 3))
    edge_index = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 6], [0, 0, 1, 2, 3, 3, 1,
                                                          2]])
    ref = randomized(GATConv((6, 3), 4, heads=2, residual=True,
                             add_self_loops=False))
    conv = QuantGATConv.from_float(ref)
    adj = adjacency(edge_index, fmt, 7, 4)
    size = (7, 4) if fmt == 'edge_index' else None
    assert_same(forward_backward(conv, x, adj, None, size),
                forward_backward(ref, x, adj, None, size))


def test_state_dict_keys_are_gat_conv_keys_plus_quantizer_state():
    torch.manual_seed(0)
    x, edge_index = graph()
    ref = GATConv(6, 4, heads=2, edge_dim=3, residual=True)
    conv = QuantGATConv(6, 4, heads=2, edge_dim=3, residual=True,
                        **quantizers(8))
    conv(x, edge_index, torch.randn(edge_index.size(1), 3))
    ours = list(conv.state_dict())
    assert [k for k in ours if '_quantizer.' not in k] == \
        list(ref.state_dict())
    for key in ('lin.weight_quantizer.scale', 'res.weight_quantizer.scale',
                'lin_edge.weight_quantizer.scale',
                'attention_quantizer.scale'):
        assert key in ours
    assert ([name for name, _ in conv.named_parameters()] ==
            [name for name, _ in ref.named_parameters()])


def test_each_weight_has_its_own_quantizer():
    conv = QuantGATConv((6, 3), 4, heads=2, edge_dim=3, residual=True,
                        **quantizers(8))
    linears = (conv.lin_src, conv.lin_dst, conv.lin_edge, conv.res)
    assert conv.lin is None
    assert all(isinstance(lin, QuantLinear) for lin in linears)
    assert conv.weight_quantizer is conv.lin_src.weight_quantizer
    assert len({id(lin.weight_quantizer) for lin in linears}) == 4


def test_constructor_signature_keeps_gat_conv_arguments():
    ref = inspect.signature(GATConv.__init__).parameters
    ours = inspect.signature(QuantGATConv.__init__).parameters
    names = list(ref)[:12]
    assert list(ours)[:12] == names
    for name in names[1:]:
        assert ours[name].default == ref[name].default
        assert ours[name].kind == ref[name].kind
    forward = inspect.signature(QuantGATConv.forward).parameters
    assert list(forward) == list(
        inspect.signature(GATConv.forward).parameters)


def test_from_float_copies_config_and_weights():
    torch.manual_seed(0)
    x, edge_index = graph()
    edge_attr = torch.randn(edge_index.size(1), 3)
    ref = randomized(GATConv(6, 4, heads=3, concat=False, negative_slope=0.3,
                             dropout=0.25, edge_dim=3, fill_value='add',
                             residual=True)).eval()
    conv = QuantGATConv.from_float(ref, attention=IntegerQuantizer(4))
    for name in ('in_channels', 'out_channels', 'heads', 'concat',
                 'negative_slope', 'dropout', 'add_self_loops', 'edge_dim',
                 'fill_value', 'residual', 'node_dim', 'aggr'):
        assert getattr(conv, name) == getattr(ref, name), name
    assert not conv.training and conv.attention_quantizer.bits == 4
    conv.apply(pyg_qgnn.disable_fake_quant)
    assert torch.equal(conv(x, edge_index, edge_attr),
                       ref(x, edge_index, edge_attr))


# The paper's equation ########################################################


def reference(conv, x, edge_index, edge_attr=None):
    r"""The quantized GAT layer in plain torch, the softmax taken densely
    over the sources of each target (the graph has no duplicate edges and
    no self-loops; each node gets one)."""
    heads, channels = conv.heads, conv.out_channels
    num_nodes = x.size(0)
    x_q = fq(x, conv.input_quantizer)
    h = (x_q @ fq(conv.lin.weight, conv.lin.weight_quantizer).t()).view(
        -1, heads, channels)
    loops = torch.arange(num_nodes)
    src = torch.cat([edge_index[0], loops])
    dst = torch.cat([edge_index[1], loops])
    logits = ((h * conv.att_src).sum(-1)[src] +
              (h * conv.att_dst).sum(-1)[dst])
    if edge_attr is not None:
        edge_attr = torch.cat([edge_attr,
                               edge_attr.new_full((num_nodes, 3), 0.5)])
        e = edge_attr @ fq(conv.lin_edge.weight,
                           conv.lin_edge.weight_quantizer).t()
        logits = logits + (e.view(-1, heads, channels) * conv.att_edge).sum(-1)
    logits = F.leaky_relu(logits, conv.negative_slope)
    dense = torch.full((heads, num_nodes, num_nodes), float('-inf'))
    dense = dense.index_put((torch.arange(heads).view(-1, 1), dst, src),
                            logits.t())
    alpha = dense.softmax(dim=-1)[:, dst, src].t()  # (E, H)
    alpha = fq(alpha, conv.attention_quantizer)
    messages = fq(alpha.unsqueeze(-1) * h[src], conv.message_quantizer)
    agg = torch.zeros(num_nodes, heads, channels).index_add(0, dst, messages)
    agg = fq(agg, conv.aggregate_quantizer)
    out = agg.reshape(num_nodes, -1) if conv.concat else agg.mean(dim=1)
    if conv.res is not None:
        out = out + x_q @ fq(conv.res.weight, conv.res.weight_quantizer).t()
    return fq(out + conv.bias, conv.output_quantizer)


@pytest.mark.parametrize('bits,kwargs', [
    (8, dict()),
    (4, dict(concat=False, residual=True)),
    (8, dict(edge_dim=3, fill_value=0.5)),
])
def test_matches_float_reference(bits, kwargs):
    torch.manual_seed(0)
    x, edge_index = graph(num_nodes=10, num_edges=25)
    edge_attr = edge_features(edge_index, kwargs)
    conv = randomized(QuantGATConv(6, 4, heads=2, **kwargs,
                                   **quantizers(bits)))
    args = (x, edge_index, edge_attr)
    conv(*args)  # calibrate
    conv.eval()
    out, grads = forward_backward(conv, *args)

    twin = copy.deepcopy(conv)  # its parameters collect the reference grads
    twin.zero_grad()
    x_ref = x.clone().requires_grad_()
    attr_ref = None if edge_attr is None else \
        edge_attr.clone().requires_grad_()
    expected = reference(twin, x_ref, edge_index, attr_ref)
    assert torch.allclose(out, expected, atol=1e-5, rtol=1e-5)
    conv.apply(pyg_qgnn.disable_fake_quant)
    assert not torch.allclose(out, conv(*args), atol=1e-4)

    gen = torch.Generator().manual_seed(0)
    (expected * torch.randn(expected.shape, generator=gen)).sum().backward()
    assert torch.allclose(grads.pop('arg0'), x_ref.grad, atol=1e-5,
                          rtol=1e-5)
    if attr_ref is not None:
        assert torch.allclose(grads.pop('arg2'), attr_ref.grad, atol=1e-5,
                              rtol=1e-5)
    params = dict(twin.named_parameters())
    assert grads.keys() == params.keys()
    for name, grad in grads.items():
        assert torch.allclose(grad, params[name].grad, atol=1e-5,
                              rtol=1e-5), name
        assert grad.abs().sum() > 0, name


def test_attention_quantized_before_dropout():
    torch.manual_seed(0)
    x, edge_index = graph(num_nodes=10, num_edges=25)
    conv = QuantGATConv(6, 4, heads=2, dropout=0.5,
                        attention_quantizer=IntegerQuantizer(4))
    conv.eval()
    _, (_, alpha) = conv(x, edge_index, return_attention_weights=True)
    quantizer = conv.attention_quantizer
    codes = alpha / quantizer.scale + quantizer.zero_point
    assert torch.allclose(codes, codes.round(), atol=1e-4)
    assert alpha.unique().numel() <= 16

    conv.train()
    quantizer.observer_enabled = False  # keep the grid fixed
    _, (_, dropped) = conv(x, edge_index, return_attention_weights=True)
    kept = dropped[dropped != 0] * (1 - 0.5)  # undo dropout's rescaling
    assert 0 < kept.numel() < dropped.numel()
    codes = kept / quantizer.scale + quantizer.zero_point
    assert torch.allclose(codes, codes.round(), atol=1e-4)


def test_quantizers_called_once_per_node_tensor():
    torch.manual_seed(0)
    x, edge_index = graph(num_nodes=10, num_edges=25)
    conv = QuantGATConv(6, 4, heads=2, residual=True, **quantizers(8))
    calls = []
    for point in conv.quant_points:
        if point != 'weight':
            getattr(conv, f'{point}_quantizer').register_forward_hook(
                lambda m, inputs, out, point=point: calls.append(
                    (point, tuple(inputs[0].shape))))
    conv(x, edge_index)
    assert calls == [('input', (10, 6)), ('attention', (35, 2)),
                     ('message', (35, 2, 4)), ('aggregate', (10, 2, 4)),
                     ('output', (10, 8))]
    calls.clear()
    conv((x, x[:4]), edge_index[:, edge_index[1] < 4], size=(10, 4))
    assert [c for c in calls if c[0] == 'input'] == [('input', (10, 6)),
                                                     ('input', (4, 6))]


# Adjacency formats ###########################################################


@pytest.mark.parametrize('fmt', FORMATS[1:])
def test_sparse_formats_agree_with_edge_index(fmt):
    torch.manual_seed(0)
    x, edge_index = graph(num_nodes=12, num_edges=40)
    conv = randomized(QuantGATConv(6, 4, heads=2, **quantizers(8)))
    calibrated(conv, x, edge_index)
    out, grads = forward_backward(conv, x, adjacency(edge_index, fmt, 12))
    expected, expected_grads = forward_backward(conv, x, edge_index)
    assert torch.allclose(out, expected, atol=1e-5)
    for name in expected_grads:
        assert torch.allclose(grads[name], expected_grads[name], atol=1e-4)


# Invariances and edge cases ##################################################


@pytest.mark.parametrize('bits', [8, 4])
def test_permutation_equivariance(bits):
    torch.manual_seed(0)
    x, edge_index = graph(num_nodes=15, num_edges=45)
    conv = randomized(QuantGATConv(6, 4, heads=2, residual=True,
                                   **quantizers(bits)))
    calibrated(conv, x, edge_index)
    out = conv(x, edge_index)
    perm = torch.randperm(15)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(15)
    assert torch.allclose(conv(x[perm], inv[edge_index]), out[perm],
                          atol=1e-5)


@pytest.mark.parametrize('training', [True, False])
def test_empty_graph_and_isolated_nodes(training):
    torch.manual_seed(0)
    conv = QuantGATConv(6, 4, heads=2, **quantizers(8)).train(training)
    out = conv(torch.empty(0, 6), torch.empty(2, 0, dtype=torch.long))
    assert out.shape == (0, 8)
    out = conv(torch.randn(10, 6), torch.tensor([[0, 1], [1, 2]]))
    assert out.shape == (10, 8) and torch.isfinite(out).all()


def test_nan_input_raises_in_training():
    x, edge_index = graph()
    x[3, 2] = float('nan')
    conv = QuantGATConv(6, 4, **quantizers(8)).train()
    with pytest.raises(ValueError, match='NaN'):
        conv(x, edge_index)


def test_integer_input_raises_type_error():
    _, edge_index = graph()
    conv = QuantGATConv(6, 4, **quantizers(8))
    with pytest.raises(TypeError, match='floating-point'):
        conv(torch.ones(8, 6, dtype=torch.long), edge_index)


def test_bad_quantizer_arguments_raise_type_error():
    with pytest.raises(TypeError, match='attention_quantizer'):
        QuantGATConv(6, 4, attention_quantizer='int8')
    with pytest.raises(TypeError, match='scale_quantizer'):
        QuantGATConv(6, 4, scale_quantizer=IntegerQuantizer(8))


def test_repr_shows_bits():
    conv = QuantGATConv(6, 4, heads=2, weight_quantizer=IntegerQuantizer(4),
                        attention_quantizer=IntegerQuantizer(8))
    assert repr(conv) == ('QuantGATConv(6, 4, heads=2, weight_bits=4, '
                          'attention_bits=8)')
    assert repr(QuantGATConv(6, 4)) == 'QuantGATConv(6, 4, heads=1)'
