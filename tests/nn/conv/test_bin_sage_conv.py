"""Tests of BinSAGEConv (Eq. 14-15) against plain torch and PyG's SAGEConv."""
import inspect

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.nn import SAGEConv
from torch_geometric.nn.aggr import MaxAggregation

from pyg_qgnn import (
    BinSAGEConv,
    QuantLinear,
    SignQuantizer,
    disable_fake_quant,
    set_binarization_stage,
)
from pyg_qgnn.quantizers import clip_latent_weights_, latent_binary_weights
from tests.nn.conv.test_bin_edge_conv import ref_batch_norm, ref_sign
from tests.nn.conv.test_quant_gcn_conv import graph
from tests.nn.conv.test_quant_gin_conv import (
    FORMATS,
    adjacency,
    forward_backward,
)

def randomize(conv, seed=0):
    r"""Every parameter away from its initial value (rescaling, batch norm
    and PReLU slope included)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in conv.named_parameters():
            noise = torch.randn(param.shape, generator=gen)
            if name.startswith(('rescale.', 'norm.weight', 'activation.')):
                param.copy_(noise * 0.3 + 1)
            else:
                param.copy_(noise * 0.5)
    return conv


def ref_aggregate(x_src, edge_index, num_dst, aggr):
    src, dst = edge_index
    messages = x_src[src]
    if aggr == 'max':
        index = dst.view(-1, 1).expand_as(messages)
        return torch.zeros(num_dst, x_src.size(1)).scatter_reduce(
            0, index, messages, 'amax', include_self=False)
    total = torch.zeros(num_dst, x_src.size(1)).index_add(0, dst, messages)
    if aggr == 'sum':
        return total
    count = torch.zeros(num_dst).index_add(0, dst, torch.ones(dst.numel()))
    return total / count.clamp(min=1).view(-1, 1)


def reference(p, x_src, x_dst, edge_index, aggr='mean', root_weight=True,
              normalize=False, output_sign=False):
    r"""Eq. 14-15 in plain torch: :obj:`p` maps the conv's parameter names to
    leaves; batch normalization on the batch statistics (training)."""
    aggregate = ref_aggregate(x_src, edge_index, x_dst.size(0), aggr)
    h = torch.cat([x_dst, aggregate], -1) if root_weight else aggregate
    h = ref_sign(ref_batch_norm(h, p['norm.weight'], p['norm.bias']))
    weight = p['lin_l.weight']
    if root_weight:
        weight = torch.cat([p['lin_r.weight'], weight], dim=1)
    out = h @ ref_sign(weight).t() * p['rescale.alpha'] + p['lin_l.bias']
    out = torch.where(out >= 0, out, p['activation.weight'] * out)  # PReLU
    if normalize:
        out = out / out.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    return ref_sign(out) if output_sign else out


def assert_matches_reference(conv, x, adj, edge_index, **settings):
    r"""Output and every gradient of :obj:`conv` equal those of
    :func:`reference` on leaves of its parameters."""
    x_src, x_dst = (x, x) if torch.is_tensor(x) else x
    out, grads = forward_backward(conv, x, adj)
    leaves = {n: p.detach().clone().requires_grad_()
              for n, p in conv.named_parameters()}
    src = x_src.detach().clone().requires_grad_()
    dst = src if x_dst is x_src else x_dst.detach().clone().requires_grad_()
    ref = reference(leaves, src, dst, edge_index, **settings)
    gen = torch.Generator().manual_seed(0)  # as forward_backward draws it
    (ref * torch.randn(ref.shape, generator=gen)).sum().backward()
    torch.testing.assert_close(out, ref.detach(), atol=1e-5, rtol=1e-5)
    ref_grads = {'arg0' if dst is src else 'arg0.0': src.grad}
    if dst is not src:
        ref_grads['arg0.1'] = dst.grad
    ref_grads.update({n: leaf.grad for n, leaf in leaves.items()})
    assert set(grads) == {k for k, v in ref_grads.items() if v is not None}
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], atol=1e-5,
                                   rtol=1e-5, msg=name)


# The paper's equation ########################################################


@pytest.mark.parametrize('fmt', FORMATS)
@pytest.mark.parametrize('aggr', ['mean', 'max', 'sum'])
def test_forward_and_gradients_match_eq_14_15(aggr, fmt):
    torch.manual_seed(0)
    x, edge_index = graph()
    conv = randomize(BinSAGEConv(6, 5, aggr=aggr))
    assert_matches_reference(conv, x, adjacency(edge_index, fmt, 8),
                             edge_index, aggr=aggr)


@pytest.mark.parametrize('kwargs', [
    dict(root_weight=False),
    dict(normalize=True),
    dict(output_quantizer='sign'),
])
def test_options_match_eq_14_15(kwargs):
    torch.manual_seed(0)
    x, edge_index = graph()
    conv = randomize(BinSAGEConv(6, 5, **kwargs))
    settings = {k: v for k, v in kwargs.items() if k != 'output_quantizer'}
    settings['output_sign'] = 'output_quantizer' in kwargs
    assert_matches_reference(conv, x, edge_index, edge_index, **settings)


@pytest.mark.parametrize('fmt', FORMATS)
def test_bipartite_input_as_neighbor_sampling_gives_it(fmt):
    torch.manual_seed(0)
    # Targets: the first 4 of 7 source nodes, with features of their own.
    x = (torch.randn(7, 6), torch.randn(4, 3))
    edge_index = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 6, 2],
                               [0, 0, 1, 2, 3, 3, 1, 2, 3]])
    conv = randomize(BinSAGEConv((6, 3), 5))
    assert conv.norm.num_features == 9  # [x_i || aggr]: 3 + 6
    assert_matches_reference(conv, x, adjacency(edge_index, fmt, 7, 4),
                             edge_index)


def test_eval_uses_running_statistics():
    torch.manual_seed(0)
    x, edge_index = graph()
    conv = randomize(BinSAGEConv(6, 5))
    conv(x, edge_index)
    conv.eval()
    norm = conv.norm
    aggregate = ref_aggregate(x, edge_index, 8, 'mean')
    h = torch.cat([x, aggregate], -1)
    h = (h - norm.running_mean) / torch.sqrt(norm.running_var + norm.eps) \
        * norm.weight + norm.bias
    weight = torch.cat([conv.lin_r.weight, conv.lin_l.weight], 1)
    out = torch.where(h >= 0, 1.0, -1.0) @ torch.where(weight >= 0, 1.0,
                                                       -1.0).t()
    out = F.prelu(out * conv.rescale.alpha + conv.lin_l.bias,
                  conv.activation.weight)
    torch.testing.assert_close(conv(x, edge_index), out)


def test_permutation_equivariance():
    torch.manual_seed(0)
    x, edge_index = graph()
    conv = randomize(BinSAGEConv(6, 5, output_quantizer='sign'))
    conv(x, edge_index)  # running statistics
    conv.eval()
    perm = torch.randperm(8)
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(8)
    out = conv(x, edge_index)
    assert torch.equal(conv(x[perm], inverse[edge_index]), out[perm])


# SAGEConv ####################################################################

SAGE_KWARGS = [
    dict(),
    dict(aggr='max'),
    dict(aggr='sum', root_weight=False, bias=False),
    dict(project=True, normalize=True),
]


@pytest.mark.parametrize('fmt', FORMATS)
@pytest.mark.parametrize('kwargs', SAGE_KWARGS)
def test_binarization_off_equals_sage_conv(kwargs, fmt):
    torch.manual_seed(0)
    x, edge_index = graph()
    ref = randomize(SAGEConv(6, 5, **kwargs))
    conv = BinSAGEConv.from_float(ref, batch_norm=False, activation=None)
    adj = adjacency(edge_index, fmt, 8)
    binary = conv(x, adj)
    conv.apply(disable_fake_quant)
    out, grads = forward_backward(conv, x, adj)
    ref_out, ref_grads = forward_backward(ref, x, adj)
    assert not torch.allclose(binary, ref_out, atol=1e-2)
    # One product on [x_i || aggr]: SAGEConv's two, summed in another order.
    torch.testing.assert_close(out, ref_out, atol=1e-6, rtol=1e-6)
    for name, grad in ref_grads.items():
        torch.testing.assert_close(grads[name], grad, atol=1e-6, rtol=1e-6,
                                   msg=name)
    assert set(grads) - set(ref_grads) == {'rescale.alpha'}


def test_stage_0_equals_sage_conv_bipartite():
    torch.manual_seed(0)
    x = (torch.randn(7, 6), torch.randn(4, 3))
    edge_index = torch.tensor([[0, 1, 2, 6], [0, 0, 1, 3]])
    ref = randomize(SAGEConv((6, 3), 5))
    conv = set_binarization_stage(BinSAGEConv.from_float(
        ref, batch_norm=False, activation=None), 0)
    torch.testing.assert_close(conv(x, edge_index), ref(x, edge_index),
                               atol=1e-6, rtol=1e-6)


def test_state_dict_is_sage_conv_state_dict_plus_binary_parts():
    ref = randomize(SAGEConv(6, 5, project=True))
    conv = BinSAGEConv(6, 5, project=True)
    ours = list(conv.state_dict())
    binary = ['norm.weight', 'norm.bias', 'norm.running_mean',
              'norm.running_var', 'norm.num_batches_tracked',
              'rescale.alpha', 'activation.weight']
    assert sorted(ours) == sorted(list(ref.state_dict()) + binary)
    before = {k: v.clone() for k, v in conv.state_dict().items()}
    conv.load_state_dict(ref.state_dict())  # strict: the binary parts stay
    for key, value in conv.state_dict().items():
        expected = ref.state_dict()[key] if key in ref.state_dict() \
            else before[key]
        assert torch.equal(value, expected), key
    partial = {k: v for k, v in conv.state_dict().items()
               if k != 'rescale.alpha'}
    with pytest.raises(RuntimeError, match='rescale.alpha'):
        conv.load_state_dict(partial)  # a BinSAGEConv's, truncated


def test_from_float_copies_settings_and_weights():
    ref = randomize(SAGEConv((6, 3), 5, aggr=MaxAggregation(),
                             normalize=True, bias=False)).eval()
    conv = BinSAGEConv.from_float(ref, activation='relu', output=None,
                                  input=SignQuantizer(balance='median'))
    assert (conv.in_channels, conv.out_channels, conv.aggr) == \
        ((6, 3), 5, 'max')
    assert conv.normalize and conv.lin_l.bias is None and not conv.training
    assert conv.input_quantizer.balance == 'median'
    assert torch.equal(conv.lin_r.weight, ref.lin_r.weight)


def test_latent_weights_are_found_and_stages_apply():
    conv = BinSAGEConv(6, 5, project=True)
    found = latent_binary_weights(conv)
    assert {id(w) for w in found} == {id(conv.lin_l.weight),
                                      id(conv.lin_r.weight)}
    with torch.no_grad():
        conv.lin_l.weight.fill_(3.0)
    clip_latent_weights_(conv)
    assert float(conv.lin_l.weight.detach().abs().max()) <= 1.0
    assert conv.lin.weight_quantizer is None  # the projection stays real
    set_binarization_stage(conv, 2)  # binary inputs, real weights
    assert conv.input_quantizer.fake_quant_enabled
    assert not conv.weight_quantizer.fake_quant_enabled
    assert not conv.lin_r.weight_quantizer.fake_quant_enabled


def test_sublayers_and_repr():
    conv = BinSAGEConv(6, 5)
    assert isinstance(conv.lin_l, QuantLinear)
    assert conv.weight_quantizer is conv.lin_l.weight_quantizer
    assert conv.lin_r.weight_quantizer is not conv.weight_quantizer
    assert repr(conv) == ("BinSAGEConv(6, 5, aggr='mean', batch_norm=True, "
                          "activation='prelu', input_bits=1, weight_bits=1)")
    assert repr(BinSAGEConv(6, 5, aggr='max', batch_norm=False,
                            activation=None, input_quantizer=None,
                            output_quantizer='sign')) == (
        "BinSAGEConv(6, 5, aggr='max', batch_norm=False, activation=None, "
        "weight_bits=1, output_bits=1)")


def test_constructor_signature_keeps_sage_conv_arguments():
    ref = inspect.signature(SAGEConv.__init__).parameters
    ours = inspect.signature(BinSAGEConv.__init__).parameters
    names = ['self', 'in_channels', 'out_channels', 'aggr', 'normalize',
             'root_weight', 'project', 'bias']
    assert list(ours)[:8] == list(ref)[:8] == names
    for name in names[1:]:
        assert ours[name].default == ref[name].default


# Bad input ###################################################################


@pytest.mark.parametrize('kwargs,message', [
    (dict(aggr='lstm'), "'aggr' must be one of"),
    (dict(aggr=['mean', 'max']), "'aggr' must be one of"),
    (dict(in_channels=-1), "'in_channels'.*no lazy initialization"),
    (dict(in_channels=(6, 0)), "'in_channels'"),
    (dict(activation='tanh'), "'activation' must be one of"),
    (dict(input_quantizer='tanh'), "'input_quantizer' must be 'sign'"),
])
def test_bad_arguments_are_named(kwargs, message):
    kwargs = dict(dict(in_channels=6, out_channels=5), **kwargs)
    with pytest.raises(ValueError, match=message):
        BinSAGEConv(**kwargs)


def test_unsupported_aggregation_of_a_float_layer_is_named():
    with pytest.raises(ValueError, match="'aggr' must be one of"):
        BinSAGEConv.from_float(SAGEConv(6, 5, aggr='lstm'))


def test_missing_target_features_and_nan_are_errors():
    x, edge_index = graph()
    conv = BinSAGEConv(6, 5)
    with pytest.raises(ValueError, match="x_dst not None"):
        conv((x, None), edge_index)
    x[2, 1] = float('nan')
    with pytest.raises(ValueError, match="'x' contains NaN"):
        conv(x, edge_index)
