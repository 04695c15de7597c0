import copy
import inspect

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.nn import SAGEConv

import pyg_qgnn
from pyg_qgnn import IntegerQuantizer, QuantLinear, QuantSAGEConv
from tests.nn.conv.test_quant_gcn_conv import calibrated, fq, graph
from tests.nn.conv.test_quant_gin_conv import (
    FORMATS,
    adjacency,
    aggregation,
    assert_same,
    forward_backward,
    rounded_float64_sums,
    sum_graph,
)

def quantizers(bits=8, message=True, output=True):
    out = dict(input_quantizer=IntegerQuantizer(bits),
               weight_quantizer=IntegerQuantizer(bits, symmetric=bits >= 2,
                                                 dynamic=True),
               aggregate_quantizer=IntegerQuantizer(bits))
    if message:
        out['message_quantizer'] = IntegerQuantizer(bits)
    if output:
        out['output_quantizer'] = IntegerQuantizer(bits)
    return out


def randomized(conv):
    with torch.no_grad():
        for name in ('lin_l', 'lin'):
            lin = getattr(conv, name, None)
            if lin is not None and lin.bias is not None:
                lin.bias.normal_()
    return conv


# Float equivalence ###########################################################

SAGE_KWARGS = [
    dict(),
    dict(aggr='max'),
    dict(aggr='sum', root_weight=False, bias=False),
    dict(project=True, normalize=True),
    dict(aggr=['mean', 'max']),
    dict(aggr='lstm'),
]


@pytest.mark.parametrize('fmt', FORMATS)
@pytest.mark.parametrize('kwargs', SAGE_KWARGS)
def test_no_quantizers_equals_sage_conv(kwargs, fmt):
    torch.manual_seed(0)
    x, edge_index = graph()
    if kwargs.get('aggr') == 'lstm' and fmt == 'edge_index':
        edge_index = edge_index[:, edge_index[1].argsort(stable=True)]
    ref = randomized(SAGEConv(6, 5, **kwargs))
    conv = QuantSAGEConv.from_float(ref)
    assert list(conv.state_dict()) == list(ref.state_dict())
    adj = adjacency(edge_index, fmt, x.size(0))
    assert_same(forward_backward(conv, x, adj), forward_backward(ref, x, adj))


@pytest.mark.parametrize('fmt', FORMATS)
def test_disabled_quantizers_equal_sage_conv(fmt):
    torch.manual_seed(0)
    x, edge_index = graph()
    ref = randomized(SAGEConv(6, 5, project=True))
    conv = QuantSAGEConv(6, 5, project=True, **quantizers(4))
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
def test_bipartite_equals_sage_conv(fmt):
    torch.manual_seed(0)
    x = (torch.randn(7, 6), torch.randn(4, 3))
    edge_index = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 6], [0, 0, 1, 2, 3, 3, 1,
                                                          2]])
    ref = randomized(SAGEConv((6, 3), 5))
    conv = QuantSAGEConv.from_float(ref)
    adj = adjacency(edge_index, fmt, 7, 4)
    size = (7, 4) if fmt == 'edge_index' else None
    assert_same(forward_backward(conv, x, adj, size),
                forward_backward(ref, x, adj, size))


def test_state_dict_keys_are_sage_conv_keys_plus_quantizer_state():
    torch.manual_seed(0)
    x, edge_index = graph()
    ref = SAGEConv(6, 5, project=True)
    conv = QuantSAGEConv(6, 5, project=True, **quantizers(8))
    conv(x, edge_index)
    ours = list(conv.state_dict())
    assert [k for k in ours if '_quantizer.' not in k] == \
        list(ref.state_dict())
    for key in ('lin_l.weight_quantizer.scale', 'lin_r.weight_quantizer.scale',
                'lin.weight_quantizer.scale', 'input_quantizer.scale'):
        assert key in ours
    assert ([name for name, _ in conv.named_parameters()] ==
            [name for name, _ in ref.named_parameters()])


def test_each_weight_has_its_own_quantizer():
    conv = QuantSAGEConv(6, 5, project=True, **quantizers(8))
    linears = (conv.lin_l, conv.lin_r, conv.lin)
    assert all(isinstance(lin, QuantLinear) for lin in linears)
    assert conv.weight_quantizer is conv.lin_l.weight_quantizer
    assert len({id(lin.weight_quantizer) for lin in linears}) == 3
    assert all(lin.input_quantizer is None for lin in linears)
    conv(*graph())
    scales = [float(lin.weight_quantizer.scale) for lin in linears]
    expected = [lin.weight.abs().max().item() / 127 for lin in linears]
    assert scales == pytest.approx(expected)


def test_constructor_signature_keeps_sage_conv_arguments():
    ref = inspect.signature(SAGEConv.__init__).parameters
    ours = inspect.signature(QuantSAGEConv.__init__).parameters
    names = ['self', 'in_channels', 'out_channels', 'aggr', 'normalize',
             'root_weight', 'project', 'bias']
    assert list(ours)[:8] == list(ref)[:8] == names
    for name in names[1:]:
        assert ours[name].default == ref[name].default
        assert ours[name].kind == ref[name].kind
    with pytest.raises(ValueError, match='lazy initialization'):
        QuantSAGEConv(-1, 5, project=True)


@pytest.mark.parametrize('kwargs', SAGE_KWARGS)
def test_from_float_copies_config_and_weights(kwargs):
    torch.manual_seed(0)
    x, edge_index = graph()
    edge_index = edge_index[:, edge_index[1].argsort(stable=True)]
    ref = randomized(SAGEConv(6, 5, **kwargs)).eval()
    conv = QuantSAGEConv.from_float(ref, weight=IntegerQuantizer(4))
    for name in ('aggr', 'normalize', 'root_weight', 'project', 'in_channels',
                 'out_channels'):
        assert getattr(conv, name) == getattr(ref, name)
    assert (conv.lin_l.bias is None) == (ref.lin_l.bias is None)
    assert not conv.training
    assert conv.weight_quantizer.bits == 4
    conv.apply(pyg_qgnn.disable_fake_quant)
    assert torch.equal(conv(x, edge_index), ref(x, edge_index))


# The paper's equation ########################################################


def reference(conv, x, edge_index, size):
    r""":math:`Q_{out}(Q_w(W_1) Q_{in}(x_i) + Q_w(W_2) Q_{agg}(\mathrm{mean}_j
    Q_{msg}(\mathrm{proj}(Q_{in}(x_j)))) + b)` in plain torch."""
    x_src, x_dst = (fq(v, conv.input_quantizer) for v in x)
    w = {name: fq(getattr(conv, name).weight,
                  getattr(conv, name).weight_quantizer)
         for name in ('lin_l', 'lin_r', 'lin') if hasattr(conv, name)}
    if conv.project:
        x_src = (x_src @ w['lin'].t() + conv.lin.bias).relu()
    src, dst = edge_index
    messages = fq(x_src[src], conv.message_quantizer)
    total = torch.zeros(size[1], x_src.size(1)).index_add(0, dst, messages)
    count = torch.zeros(size[1]).index_add(0, dst, torch.ones(dst.numel()))
    agg = fq(total / count.clamp(min=1).view(-1, 1), conv.aggregate_quantizer)
    out = agg @ w['lin_l'].t() + conv.lin_l.bias + x_dst @ w['lin_r'].t()
    if conv.normalize:
        out = F.normalize(out, dim=-1)
    return fq(out, conv.output_quantizer)


@pytest.mark.parametrize('bits,project', [(8, False), (4, True)])
@pytest.mark.parametrize('bipartite', [False, True])
def test_matches_float_reference(bits, project, bipartite):
    torch.manual_seed(0)
    x, edge_index = graph(num_nodes=10, num_edges=25)
    if bipartite:  # target nodes: the first 6, with features of their own
        keep = edge_index[1] < 6
        x, edge_index = (x, 2 * torch.randn(6, 6)), edge_index[:, keep]
    else:
        x = (x, x)
    conv = randomized(QuantSAGEConv(6, 5, project=project,
                                    normalize=project, **quantizers(bits)))
    size = (10, x[1].size(0))
    args = (x if bipartite else x[0], edge_index, size)
    conv(*args)  # calibrate
    conv.eval()
    out, grads = forward_backward(conv, *args)

    twin = copy.deepcopy(conv)  # its parameters collect the reference grads
    twin.zero_grad()
    x_ref = tuple(v.clone().requires_grad_() for v in x)
    if not bipartite:
        x_ref = (x_ref[0], x_ref[0])
    expected = reference(twin, x_ref, edge_index, size)
    assert torch.allclose(out, expected, atol=1e-5, rtol=1e-5)
    conv.apply(pyg_qgnn.disable_fake_quant)
    assert not torch.allclose(out, conv(*args), atol=1e-4)

    gen = torch.Generator().manual_seed(0)
    (expected * torch.randn(expected.shape, generator=gen)).sum().backward()
    for i, v in enumerate(x_ref[:2 if bipartite else 1]):
        name = f'arg0.{i}' if bipartite else 'arg0'
        assert torch.allclose(grads.pop(name), v.grad, atol=1e-5, rtol=1e-5)
    params = dict(twin.named_parameters())
    assert grads.keys() == params.keys()
    for name, grad in grads.items():
        assert torch.allclose(grad, params[name].grad, atol=1e-5,
                              rtol=1e-5), name
        assert grad.abs().sum() > 0, name


def test_quantizers_called_once_per_node_tensor():
    torch.manual_seed(0)
    x, edge_index = graph(num_nodes=10, num_edges=25)
    conv = QuantSAGEConv(6, 5, **quantizers(8))
    calls = []
    for point in ('input', 'message', 'aggregate', 'output'):
        getattr(conv, f'{point}_quantizer').register_forward_hook(
            lambda m, inputs, out, point=point: calls.append(
                (point, tuple(inputs[0].shape))))
    conv(x, edge_index)
    assert calls == [('input', (10, 6)), ('message', (25, 6)),
                     ('aggregate', (10, 6)), ('output', (10, 5))]
    calls.clear()
    conv((x, x[:4]), edge_index[:, edge_index[1] < 4], (10, 4))
    assert [c[0] for c in calls] == ['input', 'input', 'message',
                                     'aggregate', 'output']
    assert calls[1] == ('input', (4, 6)) and calls[-1] == ('output', (4, 5))


# Message quantizer and adjacency formats #####################################


@pytest.mark.parametrize('fmt', FORMATS[1:])
@pytest.mark.parametrize('aggr', ['mean', 'max'])
def test_sparse_formats_agree_with_edge_index(fmt, aggr):
    torch.manual_seed(0)
    x, edge_index = graph(num_nodes=12, num_edges=40)
    conv = randomized(QuantSAGEConv(6, 5, aggr=aggr, **quantizers(8)))
    calibrated(conv, x, edge_index)
    calls = []
    conv.message_quantizer.register_forward_hook(
        lambda module, inputs, output: calls.append(inputs[0].shape))
    out, grads = forward_backward(conv, x, adjacency(edge_index, fmt, 12))
    expected, expected_grads = forward_backward(conv, x, edge_index)
    assert torch.allclose(out, expected, atol=1e-5)
    for name in expected_grads:
        assert torch.allclose(grads[name], expected_grads[name], atol=1e-4)
    assert calls == [(40, 6), (40, 6)]  # one message per edge on both paths


def test_decomposed_layers_agree_in_evaluation():
    torch.manual_seed(0)
    x, edge_index = graph(num_nodes=12, num_edges=40)
    conv = randomized(QuantSAGEConv(6, 5, **quantizers(8)))
    calibrated(conv, x, edge_index)
    expected = conv(x, edge_index)
    conv.decomposed_layers = 2
    assert torch.allclose(conv(x, edge_index), expected, atol=1e-6)


# Sums in float64 in evaluation ###############################################
# As QuantGINConv (see its tests): sums and means of an evaluating twin with
# Q_in on run in float64, rounded once; training keeps PyG's float32.


@pytest.mark.parametrize('aggr,exact', [('mean', True), ('sum', True),
                                        ('add', True), ('max', False),
                                        ('lstm', False),
                                        (['mean', 'max'], False)])
def test_exact_sums_for_sums_and_means_in_evaluation(aggr, exact):
    conv = QuantSAGEConv(6, 5, aggr=aggr, **quantizers(8)).eval()
    assert conv.exact_sums()  # Q_in on, evaluation
    assert conv._exact_aggregation == exact
    assert not conv.train().exact_sums()
    conv.eval().input_quantizer.fake_quant_enabled = False
    assert not conv.exact_sums()


@pytest.mark.parametrize('message', [False, True])
@pytest.mark.parametrize('aggr', ['mean', 'sum'])
@pytest.mark.parametrize('fmt', FORMATS)
def test_evaluation_sums_in_float64_training_in_float32(fmt, aggr, message):
    torch.manual_seed(0)
    x, edge_index = sum_graph()
    conv = randomized(QuantSAGEConv(6, 5, aggr=aggr, **quantizers(
        8, message=message)))
    calibrated(conv, x, edge_index).apply(pyg_qgnn.freeze_observer)
    adj = adjacency(edge_index, fmt, x.size(0))
    evaluated = aggregation(conv, x, adj)
    assert evaluated.dtype == torch.float32
    assert torch.equal(evaluated,
                       rounded_float64_sums(conv, x, edge_index, aggr))
    trained = aggregation(conv.train(), x, adj)
    if not message:  # the parent's float32 aggregation of the same values
        ref = SAGEConv(6, 5, aggr=aggr).train()
        x_hat = conv.input_quantizer(x)
        assert torch.equal(trained, aggregation(ref, x_hat, adj))
    assert not torch.equal(trained, evaluated)  # float32 sums do round
    torch.testing.assert_close(trained, evaluated)


def test_lstm_aggregation_in_evaluation_is_the_parents():
    # Its float32 weights take float32 messages: no float64 path.
    torch.manual_seed(0)
    x, edge_index = graph(num_nodes=10, num_edges=25)
    edge_index = edge_index[:, edge_index[1].argsort(stable=True)]
    ref = randomized(SAGEConv(6, 5, aggr='lstm')).eval()
    conv = QuantSAGEConv.from_float(ref, input=IntegerQuantizer(8))
    conv(x, edge_index)  # calibrate
    conv.eval()
    x_hat = conv.input_quantizer(x)
    assert torch.equal(conv(x, edge_index), ref(x_hat, edge_index))


@pytest.mark.parametrize('fmt', FORMATS)
def test_evaluation_with_quantizers_off_equals_sage_conv(fmt):
    torch.manual_seed(0)
    x, edge_index = sum_graph()
    ref = randomized(SAGEConv(6, 5)).eval()
    conv = QuantSAGEConv.from_float(ref, aggregate=IntegerQuantizer(8))
    conv(x, edge_index)  # calibrate
    adj = adjacency(edge_index, fmt, x.size(0))
    conv.eval()
    # Q_in off (Q_agg on alone): float32 sums, as the parent's.
    assert torch.equal(aggregation(conv, x, adj), aggregation(ref, x, adj))
    conv.apply(pyg_qgnn.disable_fake_quant)
    assert_same(forward_backward(conv, x, adj), forward_backward(ref, x, adj))


@pytest.mark.parametrize('fmt', FORMATS)
def test_script_in_evaluation_equals_eager(fmt):
    from tests.nn.test_script_compile import FixedStepScheme
    torch.manual_seed(0)
    x, edge_index = graph(num_nodes=9, num_edges=24)
    conv = pyg_qgnn.quantize_model(randomized(SAGEConv(6, 5)),
                                   FixedStepScheme()).eval()
    assert conv.exact_sums()
    adj = adjacency(edge_index, fmt, 9)
    assert_same(forward_backward(torch.jit.script(conv), x, adj),
                forward_backward(conv, x, adj))


def test_compile_in_evaluation_equals_eager():
    from tests.nn.test_script_compile import BACKEND
    torch.manual_seed(0)
    x, edge_index = graph(num_nodes=9, num_edges=24)
    conv = randomized(QuantSAGEConv(6, 5, **quantizers(8, message=False)))
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
    conv = randomized(QuantSAGEConv(6, 5, project=True, **quantizers(bits)))
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
    conv = QuantSAGEConv(6, 5, **quantizers(8)).train(training)
    out = conv(torch.empty(0, 6), torch.empty(2, 0, dtype=torch.long))
    assert out.shape == (0, 5)
    out = conv(torch.randn(10, 6), torch.tensor([[0, 1], [1, 2]]))
    assert out.shape == (10, 5) and torch.isfinite(out).all()


def test_nan_input_raises_in_training():
    x, edge_index = graph()
    x[3, 2] = float('nan')
    conv = QuantSAGEConv(6, 5, **quantizers(8)).train()
    with pytest.raises(ValueError, match='NaN'):
        conv(x, edge_index)


def test_integer_input_raises_type_error():
    _, edge_index = graph()
    conv = QuantSAGEConv(6, 5, **quantizers(8))
    with pytest.raises(TypeError, match='floating-point'):
        conv(torch.ones(8, 6, dtype=torch.long), edge_index)


def test_bad_quantizer_arguments_raise_type_error():
    with pytest.raises(TypeError, match='aggregate_quantizer'):
        QuantSAGEConv(6, 5, aggregate_quantizer=8)
    with pytest.raises(TypeError, match='weight_quantizer'):
        QuantSAGEConv(6, 5, weight_quantizer=torch.nn.Identity())
    with pytest.raises(TypeError, match='attention'):
        QuantSAGEConv.from_float(SAGEConv(6, 5),
                                 attention=IntegerQuantizer(8))


def test_repr_shows_bits():
    conv = QuantSAGEConv(6, 5, input_quantizer=IntegerQuantizer(8),
                         weight_quantizer=IntegerQuantizer(4))
    assert repr(conv) == ('QuantSAGEConv(6, 5, aggr=mean, input_bits=8, '
                          'weight_bits=4)')
    assert repr(QuantSAGEConv(6, 5, aggr='max')) == \
        'QuantSAGEConv(6, 5, aggr=max)'
