"""Tests of XorEdgeConv (Eq. 17-20) against plain torch and PyG's EdgeConv."""
import pytest
import torch
import torch.nn.functional as F
from torch_geometric.nn import EdgeConv

from pyg_qgnn import XorEdgeConv, disable_fake_quant, set_binarization_stage
from pyg_qgnn.quantizers import pack_bits


def ref_sign(x):
    r"""sign (+1 at 0) with the clipped straight-through gradient."""
    inner = x.clamp(-1, 1)
    return inner + (torch.where(x >= 0, 1.0, -1.0) - inner).detach()


def ref_batch_norm(x, weight, bias, eps=1e-5):
    mean = x.mean(0, keepdim=True)
    var = (x - mean).pow(2).mean(0, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def packed(signs):
    return pack_bits((signs > 0).to(torch.uint8), 1)


def regular_graph(num_nodes=10, k=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    sources = torch.stack([torch.randperm(num_nodes, generator=gen)[:k]
                           for _ in range(num_nodes)])
    targets = torch.arange(num_nodes).repeat_interleave(k)
    return torch.stack([sources.reshape(-1), targets])


def randomize(conv, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in conv.named_parameters():
            if name != 'nn.weight':
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5 + 1)
    return conv


@pytest.mark.parametrize('aggr', ['max', 'mean'])
@pytest.mark.parametrize('norm', ['after', 'before'])
def test_forward_and_gradients_match_eq_17_to_20(norm, aggr):
    torch.manual_seed(0)
    num_nodes, k = 10, 3
    # A bias keeps messages off exactly 0, where torch's scatter max
    # backward also counts the zero-initialized output as a tie.
    conv = randomize(XorEdgeConv(8, 5, aggr=aggr, norm=norm, bias=True))
    x = torch.randn(num_nodes, 8, requires_grad=True)
    edge_index = regular_graph(num_nodes, k)
    p = {n: q.detach().clone().requires_grad_()
         for n, q in conv.named_parameters()}
    x_ref = x.detach().clone().requires_grad_()

    x_b = ref_sign(x_ref)
    j, i = edge_index
    edges = torch.cat([x_b[i], -x_b[j] * x_b[i]], dim=-1)  # Eq. 17
    scaled = (F.linear(edges, ref_sign(p['nn.weight'])) * p['nn.rescale.alpha']
              + p['nn.bias'])
    messages = torch.where(scaled > 0, scaled,  # PReLU, slope at 0
                           p['nn.activation.weight'] * scaled)
    bn = lambda t: ref_batch_norm(t, p['norm.weight'], p['norm.bias'])  # noqa
    # amax splits the gradient among ties, as PyG's max does on CPU.
    reduce = (lambda t: t.amax(1)) if aggr == 'max' else (  # noqa: E731
        lambda t: t.mean(1))
    if norm == 'after':  # Eq. 19
        pre = bn(reduce(messages.view(num_nodes, k, 5)))
    else:  # Eq. 20
        pre = reduce(bn(messages).view(num_nodes, k, 5))
    ref = ref_sign(pre)

    out = conv(x, edge_index)
    assert torch.equal(out, ref)
    assert bool(((out == 1) | (out == -1)).all())
    upstream = torch.randn(num_nodes, 5)
    out.backward(upstream)
    ref.backward(upstream)
    assert torch.allclose(x.grad, x_ref.grad, atol=1e-5)
    for name, param in conv.named_parameters():
        assert torch.allclose(param.grad, p[name].grad, atol=1e-5), name


def test_edge_features_are_the_xor_of_packed_node_codes():
    torch.manual_seed(0)
    conv = XorEdgeConv(13, 4)  # 13 bits: not a multiple of 8
    x = torch.randn(10, 13)
    edge_index = regular_graph()
    seen = []
    conv.nn.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    conv(x, edge_index)
    x_i, edge = seen[0][:, :13], seen[0][:, 13:]
    signs = torch.where(x >= 0, 1.0, -1.0)
    j, i = edge_index
    assert torch.equal(x_i, signs[i])
    assert torch.equal(edge, -signs[j] * signs[i])
    assert torch.equal(packed(edge), packed(signs[j]) ^ packed(signs[i]))


@pytest.mark.parametrize('norm', ['after', 'before'])
@pytest.mark.parametrize('training', [True, False])
def test_binarization_off_equals_edge_conv_plus_batch_norm(norm, training):
    torch.manual_seed(0)
    conv = XorEdgeConv(4, 6, norm=norm)
    if norm == 'after':
        edge_conv = EdgeConv(conv.nn)  # shares (and resets) conv.nn
        ref = lambda x, e: conv.norm(edge_conv(x, e))  # noqa: E731
    else:
        ref = EdgeConv(torch.nn.Sequential(conv.nn, conv.norm))
    randomize(conv).train(training)
    x, edge_index = torch.randn(10, 4), regular_graph()
    conv.apply(disable_fake_quant)
    assert not conv.binary_input
    assert torch.equal(conv(x, edge_index), ref(x, edge_index))


def test_stages_switch_edge_operator_and_output():
    torch.manual_seed(0)
    conv = randomize(XorEdgeConv(4, 6)).eval()
    x, edge_index = torch.randn(10, 4), regular_graph()
    j, i = edge_index
    seen = []
    conv.nn.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    set_binarization_stage(conv, 1)  # tanh relaxation, x_j - x_i
    out = conv(x, edge_index)
    assert not conv.binary_input
    assert torch.equal(seen[-1][:, 4:], x[j] - x[i])
    assert bool((out.abs() < 1).all())
    set_binarization_stage(conv, 2)  # binary features, XOR edges
    out = conv(x, edge_index)
    signs = torch.where(x >= 0, 1.0, -1.0)
    assert conv.binary_input
    assert torch.equal(seen[-1][:, 4:], -signs[j] * signs[i])
    assert bool(((out == 1) | (out == -1)).all())


def test_first_layer_on_real_coordinates_uses_differences():
    conv = XorEdgeConv(3, 4, input_quantizer=None).eval()
    x, edge_index = torch.randn(10, 3), regular_graph()
    seen = []
    conv.nn.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    out = conv(x, edge_index)
    j, i = edge_index
    assert torch.equal(seen[0], torch.cat([x[i], x[j] - x[i]], -1))
    assert bool(((out == 1) | (out == -1)).all())


def test_permutation_equivariance():
    torch.manual_seed(0)
    conv = randomize(XorEdgeConv(4, 6, norm='before')).eval()
    x, edge_index = torch.randn(10, 4), regular_graph()
    perm = torch.randperm(10)
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(10)
    assert torch.equal(conv(x[perm], inverse[edge_index]),
                       conv(x, edge_index)[perm])


def test_arguments_repr_and_errors():
    conv = XorEdgeConv(4, 6, norm='before')
    assert repr(conv) == ("XorEdgeConv(4, 6, aggr='max', norm='before', "
                          "input_bits=1, weight_bits=1, output_bits=1)")
    assert conv.input_quantizer.relaxation is None  # no second tanh
    assert conv.output_quantizer.relaxation == 'tanh'
    with pytest.raises(ValueError, match="'norm'"):
        XorEdgeConv(4, 6, norm='inside')
    x = torch.randn(10, 4)
    x[0, 0] = float('nan')
    with pytest.raises(ValueError, match="'x' contains NaN"):
        conv(x, regular_graph())
