import copy
import inspect

import pytest
import torch
from torch_geometric.nn import GINConv
from torch_geometric.typing import WITH_TORCH_SPARSE
from torch_geometric.utils import (
    scatter,
    to_torch_coo_tensor,
    to_torch_csr_tensor,
)

import pyg_qgnn
from pyg_qgnn import IntegerQuantizer, QuantGINConv, QuantLinear
from tests.nn.conv.test_quant_gcn_conv import calibrated, fq, graph

#: Adjacency formats every twin must handle like its parent.
FORMATS = ['edge_index', 'csr', 'coo'] + (['sparse_tensor']
                                          if WITH_TORCH_SPARSE else [])


def adjacency(edge_index, fmt, num_src, num_dst=None):
    r""":obj:`edge_index` (source -> target) in format :obj:`fmt`; the sparse
    formats hold the transposed matrix :obj:`adj_t[target, source]`."""
    size = (num_dst or num_src, num_src)
    if fmt == 'edge_index':
        return edge_index
    if fmt == 'csr':
        return to_torch_csr_tensor(edge_index.flip(0), size=size)
    if fmt == 'coo':
        return to_torch_coo_tensor(edge_index.flip(0), size=size)
    from torch_geometric.typing import SparseTensor
    return SparseTensor(row=edge_index[1], col=edge_index[0],
                        sparse_sizes=size)


def _leaf(value):
    if isinstance(value, tuple):
        return tuple(_leaf(v) for v in value)
    if (torch.is_tensor(value) and value.is_floating_point()
            and value.layout == torch.strided):  # features, not adjacency
        return value.detach().clone().requires_grad_()
    return value


def _grads(value, name):
    if isinstance(value, tuple):
        return {k: g for i, v in enumerate(value)
                for k, g in _grads(v, f'{name}.{i}').items()}
    if torch.is_tensor(value) and value.grad is not None:
        return {name: value.grad}
    return {}


def forward_backward(conv, *args, seed=0, **kwargs):
    r"""Output of :obj:`conv`, and the gradients of a random linear function
    of it with respect to every dense floating-point argument and every
    parameter."""
    args = [_leaf(a) for a in args]
    out = conv(*args, **kwargs)
    main = out if torch.is_tensor(out) else out[0]
    conv.zero_grad()
    gen = torch.Generator().manual_seed(seed)
    (main * torch.randn(main.shape, generator=gen)).sum().backward()
    grads = {}
    for i, arg in enumerate(args):
        grads.update(_grads(arg, f'arg{i}'))
    grads.update({name: p.grad for name, p in conv.named_parameters()
                  if p.grad is not None})
    return out, grads


def assert_same(first, second):
    r"""Equal outputs and equal gradients, bit for bit."""
    (out1, grads1), (out2, grads2) = first, second
    main1 = out1 if torch.is_tensor(out1) else out1[0]
    main2 = out2 if torch.is_tensor(out2) else out2[0]
    assert torch.equal(main1, main2)
    assert grads1.keys() == grads2.keys() and grads1
    for name in grads1:
        assert torch.equal(grads1[name], grads2[name]), name


def mlp(in_channels=6, hidden=8, out_channels=5):
    return torch.nn.Sequential(torch.nn.Linear(in_channels, hidden),
                               torch.nn.ReLU(),
                               torch.nn.Linear(hidden, out_channels))


def quant_mlp(bits=8, in_channels=6, hidden=8, out_channels=5):
    def lin(i, o):
        return QuantLinear(i, o, input_quantizer=IntegerQuantizer(bits),
                           weight_quantizer=IntegerQuantizer(
                               bits, symmetric=bits >= 2, dynamic=True))

    return torch.nn.Sequential(lin(in_channels, hidden), torch.nn.ReLU(),
                               lin(hidden, out_channels))


def quantizers(bits=8, message=True, output=True):
    out = dict(input_quantizer=IntegerQuantizer(bits),
               aggregate_quantizer=IntegerQuantizer(bits))
    if message:
        out['message_quantizer'] = IntegerQuantizer(bits)
    if output:
        out['output_quantizer'] = IntegerQuantizer(bits)
    return out


def randomized(conv):
    with torch.no_grad():
        conv.eps.fill_(0.3)
    return conv


# Float equivalence ###########################################################

GIN_KWARGS = [dict(), dict(train_eps=True), dict(eps=0.5), dict(aggr='mean'),
              dict(aggr='max')]


@pytest.mark.parametrize('fmt', FORMATS)
@pytest.mark.parametrize('kwargs', GIN_KWARGS)
def test_no_quantizers_equals_gin_conv(kwargs, fmt):
    torch.manual_seed(0)
    x, edge_index = graph()
    ref = GINConv(mlp(), **kwargs)
    conv = QuantGINConv.from_float(ref)
    assert list(conv.state_dict()) == list(ref.state_dict())
    adj = adjacency(edge_index, fmt, x.size(0))
    assert_same(forward_backward(conv, x, adj), forward_backward(ref, x, adj))


@pytest.mark.parametrize('fmt', FORMATS)
def test_disabled_quantizers_equal_gin_conv(fmt):
    torch.manual_seed(0)
    x, edge_index = graph()
    ref = randomized(GINConv(mlp(), train_eps=True))
    conv = QuantGINConv(mlp(), train_eps=True, **quantizers(4))
    conv.load_state_dict(ref.state_dict(), strict=True)  # lazy state ok
    adj = adjacency(edge_index, fmt, x.size(0))
    assert not torch.allclose(conv(x, adj), ref(x, adj))
    conv.apply(pyg_qgnn.disable_fake_quant)
    for mode in (True, False):
        conv.train(mode)
        ref.train(mode)
        assert_same(forward_backward(conv, x, adj),
                    forward_backward(ref, x, adj))


@pytest.mark.parametrize('fmt', FORMATS)
def test_bipartite_equals_gin_conv(fmt):
    torch.manual_seed(0)
    x_src, x_dst = torch.randn(7, 6), torch.randn(4, 6)
    edge_index = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 6], [0, 0, 1, 2, 3, 3, 1,
                                                          2]])
    ref = randomized(GINConv(mlp()))
    conv = QuantGINConv.from_float(ref)
    adj = adjacency(edge_index, fmt, 7, 4)
    size = (7, 4) if fmt == 'edge_index' else None
    assert_same(forward_backward(conv, (x_src, x_dst), adj, size),
                forward_backward(ref, (x_src, x_dst), adj, size))


def test_state_dict_keys_are_gin_conv_keys_plus_quantizer_state():
    torch.manual_seed(0)
    x, edge_index = graph()
    ref = GINConv(mlp(), train_eps=True)
    conv = QuantGINConv(mlp(), train_eps=True, **quantizers(8))
    conv(x, edge_index)
    ours = list(conv.state_dict())
    assert [k for k in ours if '_quantizer.' not in k] == \
        list(ref.state_dict())
    assert 'aggregate_quantizer.scale' in ours
    assert ([name for name, _ in conv.named_parameters()] ==
            [name for name, _ in ref.named_parameters()])


def test_constructor_signature_keeps_gin_conv_arguments():
    ref = inspect.signature(GINConv.__init__).parameters
    ours = inspect.signature(QuantGINConv.__init__).parameters
    assert list(ours)[:4] == list(ref)[:4]
    for name in ('nn', 'eps', 'train_eps'):
        assert ours[name].default == ref[name].default
        assert ours[name].kind == ref[name].kind
    assert 'weight_quantizer' not in ours  # the weights live in `nn`


@pytest.mark.parametrize('training', [True, False])
def test_from_float_copies_config_and_weights(training):
    torch.manual_seed(0)
    x, edge_index = graph()
    ref = randomized(GINConv(mlp(), train_eps=True, aggr='mean'))
    ref.train(training)
    conv = QuantGINConv.from_float(ref, input=IntegerQuantizer(8))
    assert conv.aggr == 'mean' and conv.initial_eps == 0.0
    assert isinstance(conv.eps, torch.nn.Parameter)
    assert conv.eps.item() == pytest.approx(0.3)
    assert conv.training == training
    assert conv.nn is not ref.nn  # a copy of the network
    assert conv.input_quantizer.bits == 8
    conv.apply(pyg_qgnn.disable_fake_quant)
    assert torch.equal(conv(x, edge_index), ref(x, edge_index))


# The paper's equation ########################################################


def reference(conv, x, edge_index, size=None):
    r""":math:`Q_{out}(h((1+\epsilon) Q_{in}(x_i) + Q_{agg}(\sum_j
    Q_{msg}(Q_{in}(x_j)))))` in plain torch, :math:`h` made of
    :class:`QuantLinear` layers computed by hand."""
    if isinstance(x, tuple):
        x_src, x_dst = (fq(v, conv.input_quantizer) for v in x)
    else:
        x_src = x_dst = fq(x, conv.input_quantizer)
    src, dst = edge_index
    messages = fq(x_src[src], conv.message_quantizer)
    agg = torch.zeros(x_dst.size(0), x_src.size(1)).index_add(0, dst,
                                                              messages)
    h = (1 + conv.eps) * x_dst + fq(agg, conv.aggregate_quantizer)
    lin1, lin2 = conv.nn[0], conv.nn[2]
    h = fq(h, lin1.input_quantizer) @ fq(lin1.weight,
                                         lin1.weight_quantizer).t()
    h = (h + lin1.bias).relu()
    h = fq(h, lin2.input_quantizer) @ fq(lin2.weight,
                                         lin2.weight_quantizer).t()
    return fq(h + lin2.bias, conv.output_quantizer)


@pytest.mark.parametrize('bits', [8, 4])
def test_matches_float_reference(bits):
    torch.manual_seed(0)
    x, edge_index = graph(num_nodes=10, num_edges=25)
    conv = randomized(QuantGINConv(quant_mlp(bits), train_eps=True,
                                   **quantizers(bits)))
    calibrated(conv, x, edge_index)
    out, grads = forward_backward(conv, x, edge_index)
    assert out.shape == (10, 5)

    twin = copy.deepcopy(conv)  # its parameters collect the reference grads
    twin.zero_grad()
    x_ref = x.clone().requires_grad_()
    expected = reference(twin, x_ref, edge_index)
    assert torch.allclose(out, expected, atol=1e-5, rtol=1e-5)
    # Quantization is not a no-op.
    conv.apply(pyg_qgnn.disable_fake_quant)
    assert not torch.allclose(out, conv(x, edge_index), atol=1e-4)

    gen = torch.Generator().manual_seed(0)
    (expected * torch.randn(expected.shape, generator=gen)).sum().backward()
    assert torch.allclose(grads.pop('arg0'), x_ref.grad, atol=1e-5,
                          rtol=1e-5)
    params = dict(twin.named_parameters())
    assert grads.keys() == params.keys()
    for name, grad in grads.items():
        assert torch.allclose(grad, params[name].grad, atol=1e-5,
                              rtol=1e-5), name
    assert grads['eps'].abs().sum() > 0


@pytest.mark.parametrize('fmt', FORMATS)
def test_bipartite_matches_float_reference_and_quantizes_each_side(fmt):
    torch.manual_seed(0)
    x = (torch.randn(7, 6), 2 * torch.randn(4, 6))
    edge_index = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 6], [0, 0, 1, 2, 3, 3, 1,
                                                          2]])
    conv = randomized(QuantGINConv(quant_mlp(8), **quantizers(8)))
    adj = adjacency(edge_index, fmt, 7, 4)
    size = (7, 4) if fmt == 'edge_index' else None
    conv(x, adj, size)  # calibrate
    conv.eval()
    calls = []
    for point in ('input', 'message', 'aggregate', 'output'):
        getattr(conv, f'{point}_quantizer').register_forward_hook(
            lambda m, inputs, out, point=point: calls.append(
                (point, tuple(inputs[0].shape))))
    out = conv(x, adj, size)
    assert calls == [('input', (7, 6)), ('input', (4, 6)),
                     ('message', (8, 6)), ('aggregate', (4, 6)),
                     ('output', (4, 5))]
    assert torch.allclose(out, reference(conv, x, edge_index), atol=1e-5)


# Message quantizer and adjacency formats #####################################


@pytest.mark.parametrize('fmt', FORMATS[1:])
@pytest.mark.parametrize('message', [False, True])
def test_sparse_formats_agree_with_edge_index(fmt, message):
    torch.manual_seed(0)
    x, edge_index = graph(num_nodes=12, num_edges=40)
    conv = randomized(QuantGINConv(quant_mlp(8), **quantizers(
        8, message=message)))
    calibrated(conv, x, edge_index)
    calls = []
    if message:
        conv.message_quantizer.register_forward_hook(
            lambda module, inputs, output: calls.append(inputs[0].shape))
    adj = adjacency(edge_index, fmt, 12)
    out, grads = forward_backward(conv, x, adj)
    expected, expected_grads = forward_backward(conv, x, edge_index)
    assert torch.allclose(out, expected, atol=1e-5)
    for name in expected_grads:
        assert torch.allclose(grads[name], expected_grads[name], atol=1e-4)
    if message:  # one message per edge on both paths
        assert calls == [(40, 6), (40, 6)]


def test_message_quantizer_switched_off_restores_fused_product():
    torch.manual_seed(0)
    x, edge_index = graph(num_nodes=9, num_edges=17)
    ref = GINConv(mlp())
    conv = QuantGINConv.from_float(ref, message=IntegerQuantizer(4))
    adj = adjacency(edge_index, 'csr', 9)
    on = conv(x, adj)
    conv.message_quantizer.fake_quant_enabled = False
    assert not torch.allclose(on, ref(x, adj), atol=1e-3)
    assert torch.equal(conv(x, adj), ref(x, adj))


# Sums in float64 in evaluation ###############################################
# With Q_in on, an evaluating twin sums its dequantized messages in float64
# and rounds once (QuantLayer.exact_sums): the bits of the deployed integer
# layer. Training keeps PyG's float32 sums.


def test_exact_sums_only_in_evaluation_with_input_quantizer_on():
    conv = QuantGINConv(mlp(), **quantizers(8)).eval()
    assert conv.exact_sums()
    assert not conv.train().exact_sums()
    conv.eval().input_quantizer.fake_quant_enabled = False
    assert not conv.exact_sums()
    conv.input_quantizer = None
    assert not conv.exact_sums()
    assert not QuantGINConv(mlp()).eval().exact_sums()


def aggregation(conv, *args, **kwargs):
    r"""What the aggregation of :obj:`conv` returns (the input of
    :math:`Q_{agg}`), by the message-and-aggregate path or the per-edge
    one."""
    found = []

    def hook(module, inputs, out):
        found.append(out.detach())

    handles = [conv.register_aggregate_forward_hook(hook),
               conv.register_message_and_aggregate_forward_hook(hook)]
    conv(*args, **kwargs)
    for handle in handles:
        handle.remove()
    assert len(found) == 1
    return found[0]


def rounded_float64_sums(conv, x, edge_index, reduce='sum'):
    r""":math:`\mathrm{fl}_{32}(\mathrm{aggr}_j\,Q_{msg}(Q_{in}(x_j)))`,
    aggregated in float64 (exactly, on a grid), rounded once."""
    x_hat = conv.input_quantizer(x)
    if conv.message_quantizer is not None:
        x_hat = conv.message_quantizer(x_hat)  # per node: the same values
    src, dst = edge_index
    return scatter(x_hat.double()[src], dst, dim=0, dim_size=x.size(0),
                   reduce=reduce).float()


def sum_graph():
    r"""A graph whose float32 sums of quantized features round: 12 nodes,
    each with about 8 in-edges, features of wide range."""
    x, edge_index = graph(num_nodes=12, num_edges=100)
    return 50 * x, edge_index


@pytest.mark.parametrize('message', [False, True])
@pytest.mark.parametrize('fmt', FORMATS)
def test_evaluation_sums_in_float64_training_in_float32(fmt, message):
    torch.manual_seed(0)
    x, edge_index = sum_graph()
    conv = QuantGINConv(quant_mlp(8), **quantizers(8, message=message))
    calibrated(conv, x, edge_index).apply(pyg_qgnn.freeze_observer)
    adj = adjacency(edge_index, fmt, x.size(0))
    evaluated = aggregation(conv, x, adj)
    assert evaluated.dtype == torch.float32
    assert torch.equal(evaluated, rounded_float64_sums(conv, x, edge_index))
    # In training, the float32 sums of the parent, on the same values.
    trained = aggregation(conv.train(), x, adj)
    if not message:
        ref = GINConv(conv.nn).train()
        x_hat = conv.input_quantizer(x)
        assert torch.equal(trained, aggregation(ref, x_hat, adj))
    assert not torch.equal(trained, evaluated)  # float32 sums do round
    torch.testing.assert_close(trained, evaluated)


@pytest.mark.parametrize('fmt', FORMATS)
def test_evaluation_with_quantizers_off_equals_gin_conv(fmt):
    # Q_in off (Q_agg on alone): float32 sums, as the parent's.
    torch.manual_seed(0)
    x, edge_index = sum_graph()
    ref = GINConv(mlp()).eval()
    conv = QuantGINConv.from_float(ref, aggregate=IntegerQuantizer(8))
    conv(x, edge_index)  # calibrate
    adj = adjacency(edge_index, fmt, x.size(0))
    conv.eval()
    assert torch.equal(aggregation(conv, x, adj), aggregation(ref, x, adj))
    conv.apply(pyg_qgnn.disable_fake_quant)
    assert_same(forward_backward(conv, x, adj), forward_backward(ref, x, adj))


@pytest.mark.parametrize('fmt', FORMATS)
def test_script_in_evaluation_equals_eager(fmt):
    # The float64 path compiles: scriptable quantizers, in evaluation.
    from tests.nn.test_script_compile import FixedStepScheme
    torch.manual_seed(0)
    x, edge_index = graph(num_nodes=9, num_edges=24)
    conv = pyg_qgnn.quantize_model(GINConv(mlp(), train_eps=True),
                                   FixedStepScheme()).eval()
    assert conv.exact_sums()
    adj = adjacency(edge_index, fmt, 9)
    assert_same(forward_backward(torch.jit.script(conv), x, adj),
                forward_backward(conv, x, adj))


def test_compile_in_evaluation_equals_eager():
    from tests.nn.test_script_compile import BACKEND
    torch.manual_seed(0)
    x, edge_index = graph(num_nodes=9, num_edges=24)
    conv = QuantGINConv(quant_mlp(8), **quantizers(8))
    calibrated(conv, x, edge_index)
    torch._dynamo.reset()
    compiled = torch.compile(copy.deepcopy(conv), backend=BACKEND)
    out, grads = forward_backward(compiled, x, edge_index)
    expected, expected_grads = forward_backward(conv, x, edge_index)
    assert torch.equal(out, expected)
    grads = {k.replace('_orig_mod.', ''): v for k, v in grads.items()}
    assert grads.keys() == expected_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], msg=name)


# Invariances and edge cases ##################################################


@pytest.mark.parametrize('bits', [8, 4])
def test_permutation_equivariance(bits):
    torch.manual_seed(0)
    x, edge_index = graph(num_nodes=15, num_edges=45)
    conv = randomized(QuantGINConv(quant_mlp(bits), **quantizers(bits)))
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
    conv = QuantGINConv(quant_mlp(8), **quantizers(8)).train(training)
    out = conv(torch.empty(0, 6), torch.empty(2, 0, dtype=torch.long))
    assert out.shape == (0, 5)
    x = torch.randn(10, 6)
    out = conv(x, torch.tensor([[0, 1], [1, 2]]))  # nodes 3..9 isolated
    assert out.shape == (10, 5) and torch.isfinite(out).all()


def test_nan_input_raises_in_training():
    x, edge_index = graph()
    x[3, 2] = float('nan')
    conv = QuantGINConv(mlp(), **quantizers(8)).train()
    with pytest.raises(ValueError, match='NaN'):
        conv(x, edge_index)


def test_integer_input_raises_type_error():
    _, edge_index = graph()
    conv = QuantGINConv(mlp(), **quantizers(8))
    with pytest.raises(TypeError, match='floating-point'):
        conv(torch.ones(8, 6, dtype=torch.long), edge_index)


def test_bad_quantizer_arguments_raise_type_error():
    with pytest.raises(TypeError, match='message_quantizer'):
        QuantGINConv(mlp(), message_quantizer='int8')
    with pytest.raises(TypeError, match='weight_quantizer'):
        QuantGINConv(mlp(), weight_quantizer=IntegerQuantizer(8))
    with pytest.raises(TypeError, match='weight'):
        QuantGINConv.from_float(GINConv(mlp()), weight=IntegerQuantizer(8))


def test_repr_shows_bits():
    conv = QuantGINConv(torch.nn.Identity(),
                        input_quantizer=IntegerQuantizer(8),
                        message_quantizer=IntegerQuantizer(4))
    assert repr(conv) == ('QuantGINConv(nn=Identity(), input_bits=8, '
                          'message_bits=4)')
    assert repr(QuantGINConv(torch.nn.Identity())) == \
        'QuantGINConv(nn=Identity())'
