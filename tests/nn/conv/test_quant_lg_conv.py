import pytest
import torch
from torch_geometric.nn import LGConv
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.utils import to_torch_csr_tensor

from pyg_qgnn import IntegerQuantizer, QuantLGConv
from pyg_qgnn.nn.conv.quant_lg_conv import sparse_propagate
from pyg_qgnn.quantizers import NodeAwareQuantizer
from tests.nn.conv.test_quant_gcn_conv import graph


def dense_lg_adjacency(edge_index, num_nodes, edge_weight=None):
    r"""D^{-1/2} A D^{-1/2} with A[i, j] = e_ji for an edge j -> i and the
    in-degree of the target, as LGConv (no self-loops)."""
    weight = torch.ones(edge_index.size(1)) if edge_weight is None else \
        edge_weight
    a = torch.zeros(num_nodes, num_nodes)
    a.index_put_((edge_index[1], edge_index[0]), weight, accumulate=True)
    d = a.sum(dim=1)
    d = torch.where(d > 0, d.pow(-0.5), torch.zeros_like(d))
    return d.view(-1, 1) * a * d.view(1, -1)


def forward_backward(conv, x, adj, weight=None):
    x = x.clone().requires_grad_()
    out = conv(x, adj) if weight is None else conv(x, adj, weight)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    return out.detach(), x.grad


@pytest.mark.parametrize('normalize', [True, False])
@pytest.mark.parametrize('weighted', [False, True])
def test_without_quantizers_equals_lgconv(normalize, weighted):
    x, edge_index = graph()
    weight = torch.rand(edge_index.size(1)) if weighted else None
    out, grad = forward_backward(QuantLGConv(normalize), x, edge_index,
                                 weight)
    ref, ref_grad = forward_backward(LGConv(normalize), x, edge_index, weight)
    assert torch.allclose(out, ref, atol=1e-6)
    assert torch.allclose(grad, ref_grad, atol=1e-6)


def test_csr_path_equals_lgconv_values_and_gradients():
    x, edge_index = graph()
    ei, w = gcn_norm(edge_index, None, x.size(0), add_self_loops=False)
    adj_t = to_torch_csr_tensor(ei.flip(0), w, size=(x.size(0), x.size(0)))
    out, grad = forward_backward(QuantLGConv(normalize=False), x, adj_t)
    ref, ref_grad = forward_backward(LGConv(normalize=False), x, adj_t)
    assert torch.equal(out, ref)  # the same sparse product
    assert torch.allclose(grad, ref_grad, atol=1e-6)
    # The directed graph's adjacency is not symmetric: the cached transpose
    # matters.
    assert not torch.equal(adj_t.to_dense(), adj_t.to_dense().t())


def test_sparse_propagate_gradient():
    x, edge_index = graph(num_nodes=6, num_edges=14)
    adj = to_torch_csr_tensor(edge_index, torch.rand(14), size=(6, 6))
    x = x.requires_grad_()
    sparse_propagate(adj, x).pow(2).sum().backward()
    dense_x = x.detach().clone().requires_grad_()
    (adj.to_dense() @ dense_x).pow(2).sum().backward()
    assert torch.allclose(x.grad, dense_x.grad, atol=1e-6)


@pytest.mark.parametrize('append_levels', [False, True])
def test_node_aware_input_equals_the_papers_equation(append_levels):
    x, edge_index = graph()
    conv = QuantLGConv(input_quantizer=NodeAwareQuantizer(
        bits=2, append_levels=append_levels))
    table = x.clone().requires_grad_()
    out = conv(table, edge_index)
    weight = torch.randn_like(out)
    (out * weight).sum().backward()

    # Eq. 9-12: H1 = D^-1/2 X D^-1/2 S[Q] (or [S[Q], S]), levels in FP8.
    quantizer = conv.input_quantizer
    levels = quantizer.levels.detach().to(torch.float8_e4m3fn).float()
    levels.requires_grad_()
    ref_table = x.clone().requires_grad_()
    h0 = levels.gather(1, quantizer.codes.long()) + \
        (ref_table - ref_table.detach())
    if append_levels:
        h0 = torch.cat([h0, levels], dim=1)
    ref = dense_lg_adjacency(edge_index, x.size(0)) @ h0
    (ref * weight).sum().backward()
    assert out.shape == (x.size(0), x.size(1) + 4 * append_levels)
    assert torch.allclose(out, ref, atol=1e-6)
    assert torch.allclose(quantizer.levels.grad, levels.grad, atol=1e-6)
    assert torch.allclose(table.grad, ref_table.grad, atol=1e-6)


def test_eight_bits_without_rau_approach_lgconv():
    torch.manual_seed(0)
    x, edge_index = graph(num_nodes=30, num_edges=120, channels=64)
    ref = LGConv()(x, edge_index)
    errors = []
    for bits in (2, 8):
        conv = QuantLGConv(input_quantizer=NodeAwareQuantizer(
            bits, relation_aware=False))
        out = conv(x, edge_index)[:, :64]
        errors.append(float((out.detach() - ref).norm() / ref.norm()))
    assert errors[1] < 0.03 < errors[0]


def test_permutation_equivariance():
    x, edge_index = graph(num_nodes=10, num_edges=30)
    perm = torch.randperm(10)
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(10)
    out = QuantLGConv(input_quantizer=NodeAwareQuantizer(2))(x, edge_index)
    permuted = QuantLGConv(input_quantizer=NodeAwareQuantizer(2))(
        x[perm], inverse[edge_index])
    assert torch.allclose(permuted, out[perm], atol=1e-6)


def test_message_quantizer_on_every_path():
    x, edge_index = graph()
    ei, w = gcn_norm(edge_index, None, x.size(0), add_self_loops=False)
    adj_t = to_torch_csr_tensor(ei.flip(0), w, size=(x.size(0), x.size(0)))
    conv = QuantLGConv(normalize=False,
                       message_quantizer=IntegerQuantizer(4, dynamic=True))
    dense = conv(x, ei, w)
    sparse = conv(x, adj_t)
    assert torch.allclose(dense, sparse, atol=1e-6)
    assert not torch.allclose(dense, LGConv(normalize=False)(x, ei, w))


def test_from_float_and_repr():
    twin = QuantLGConv.from_float(LGConv(normalize=False),
                                  input=NodeAwareQuantizer(2))
    assert not twin.normalize
    assert repr(twin) == 'QuantLGConv(normalize=False, input_bits=2)'
    with pytest.raises(TypeError, match="'input_quantizer' must be a "
                       "Quantizer"):
        QuantLGConv(input_quantizer='2-bit')


def test_torchscript_compiles_the_float_computation():
    x, edge_index = graph()
    conv = QuantLGConv()
    scripted = torch.jit.script(conv)
    assert torch.equal(scripted(x, edge_index), conv(x, edge_index))
