"""Tests of BinEdgeConv (Eq. 12-13) against plain torch and PyG's EdgeConv."""
import pytest
import torch
import torch.nn.functional as F
from torch_geometric.nn import EdgeConv

from pyg_qgnn import BinEdgeConv, disable_fake_quant, set_binarization_stage


def ref_sign(x):
    r"""sign (+1 at 0) with the clipped straight-through gradient."""
    inner = x.clamp(-1, 1)
    return inner + (torch.where(x >= 0, 1.0, -1.0) - inner).detach()


def ref_batch_norm(x, weight, bias, eps=1e-5):
    mean = x.mean(0, keepdim=True)
    var = (x - mean).pow(2).mean(0, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def regular_graph(num_nodes=10, k=3, seed=0):
    r"""Every node gets k distinct in-neighbours (possibly itself), as a
    kNN graph has; edges [j, i] grouped by i."""
    gen = torch.Generator().manual_seed(seed)
    sources = torch.stack([torch.randperm(num_nodes, generator=gen)[:k]
                           for _ in range(num_nodes)])
    targets = torch.arange(num_nodes).repeat_interleave(k)
    return torch.stack([sources.reshape(-1), targets])


def randomize(conv, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in conv.named_parameters():
            if not name.endswith('nn.weight'):
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5 + 1)
    return conv


@pytest.mark.parametrize('aggr', ['max', 'mean'])
def test_forward_and_gradients_match_eq_12_13(aggr):
    torch.manual_seed(0)
    num_nodes, k = 10, 3
    # A bias keeps messages off exactly 0, where torch's scatter max
    # backward also counts the zero-initialized output as a tie.
    conv = randomize(BinEdgeConv(4, 5, aggr=aggr, bias=True))
    x = torch.randn(num_nodes, 4, requires_grad=True)
    edge_index = regular_graph(num_nodes, k)
    leaves = {n: p.detach().clone().requires_grad_()
              for n, p in conv.named_parameters()}
    x_ref = x.detach().clone().requires_grad_()

    j, i = edge_index
    features = torch.cat([x_ref[i], x_ref[j] - x_ref[i]], dim=-1)
    normed = ref_batch_norm(features, leaves['nn.norm.weight'],
                            leaves['nn.norm.bias'])
    dot = F.linear(ref_sign(normed), ref_sign(leaves['nn.weight']))
    scaled = dot * leaves['nn.rescale.alpha'] + leaves['nn.bias']
    messages = torch.where(scaled > 0, scaled,  # PReLU, slope at 0
                           leaves['nn.activation.weight'] * scaled)
    messages = messages.view(num_nodes, k, 5)
    # Eq. 13; amax splits the gradient among ties, as PyG's max does on CPU.
    ref = messages.amax(1) if aggr == 'max' else messages.mean(1)

    out = conv(x, edge_index)
    assert torch.allclose(out, ref, atol=1e-5)
    upstream = torch.randn(num_nodes, 5)
    out.backward(upstream)
    ref.backward(upstream)
    assert torch.allclose(x.grad, x_ref.grad, atol=1e-5)
    for name, param in conv.named_parameters():
        assert torch.allclose(param.grad, leaves[name].grad, atol=1e-5), name


@pytest.mark.parametrize('training', [True, False])
def test_binarization_off_equals_edge_conv_with_the_same_mlp(training):
    torch.manual_seed(0)
    x, edge_index = torch.randn(10, 4), regular_graph()
    for switch_off in (lambda c: c.apply(disable_fake_quant),
                       lambda c: set_binarization_stage(c, 0)):
        conv = BinEdgeConv(4, 6)
        ref = EdgeConv(conv.nn, aggr='max')  # shares (and resets) conv.nn
        randomize(conv).train(training)
        ref.train(training)
        binary = conv(x, edge_index)
        switch_off(conv)
        real = conv(x, edge_index)
        assert torch.equal(real, ref(x, edge_index))
        assert not torch.allclose(real, binary)
    assert list(conv.state_dict()) == list(ref.state_dict())


def test_permutation_equivariance():
    torch.manual_seed(0)
    conv = randomize(BinEdgeConv(4, 6))
    x, edge_index = torch.randn(10, 4), regular_graph()
    conv(x, edge_index)  # running statistics
    conv.eval()
    perm = torch.randperm(10)
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(10)
    out = conv(x, edge_index)
    out_perm = conv(x[perm], inverse[edge_index])
    assert torch.equal(out_perm, out[perm])


def test_real_inputs_for_coordinates_and_repr():
    conv = BinEdgeConv(3, 8, input_quantizer=None)
    assert conv.input_quantizer is None and conv.nn.input_quantizer is None
    assert conv.weight_quantizer is conv.nn.weight_quantizer
    assert repr(conv) == "BinEdgeConv(3, 8, aggr='max', weight_bits=1)"
    assert repr(BinEdgeConv(3, 8)) == ("BinEdgeConv(3, 8, aggr='max', "
                                       "input_bits=1, weight_bits=1)")


def test_nan_features_are_an_error_naming_x():
    conv = BinEdgeConv(3, 4)
    x = torch.randn(10, 3)
    x[2, 1] = float('nan')
    with pytest.raises(ValueError, match="'x' contains NaN"):
        conv(x, regular_graph())
