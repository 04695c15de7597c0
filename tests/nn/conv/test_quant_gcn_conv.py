import inspect

import pytest
import torch
from torch_geometric.nn import GCNConv
from torch_geometric.typing import WITH_TORCH_SPARSE
from torch_geometric.utils import to_torch_csr_tensor

import pyg_qgnn
from pyg_qgnn import IntegerQuantizer, QuantGCNConv, QuantLinear


def graph(num_nodes=8, num_edges=20, channels=6, seed=0):
    r"""A random directed graph without self-loops or duplicate edges."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(num_nodes, channels, generator=gen)
    pairs = [(i, j) for i in range(num_nodes) for j in range(num_nodes)
             if i != j]
    pick = torch.randperm(len(pairs), generator=gen)[:num_edges]
    edge_index = torch.tensor([pairs[i] for i in pick.tolist()]).t()
    return x, edge_index.contiguous()


def quantizers(bits=8, message=False, output=False):
    out = dict(input_quantizer=IntegerQuantizer(bits),
               weight_quantizer=IntegerQuantizer(bits, symmetric=bits >= 2,
                                                 dynamic=True),
               aggregate_quantizer=IntegerQuantizer(bits))
    if message:
        out['message_quantizer'] = IntegerQuantizer(bits)
    if output:
        out['output_quantizer'] = IntegerQuantizer(bits)
    return out


def fq(x, quantizer):
    r"""s*(clamp(round(x/s+z),qmin,qmax)-z) with the quantizer's own range,
    with the straight-through gradient."""
    s = quantizer.scale.detach().reshape(())
    z = quantizer.zero_point.detach().reshape(())
    q = torch.clamp(torch.round(x.detach() / s + z), quantizer.qmin,
                    quantizer.qmax)
    return x + (s * (q - z) - x).detach()


def dense_gcn_adjacency(edge_index, num_nodes):
    r"""D^{-1/2}(A+I)D^{-1/2}, with A[i, j] = 1 for an edge j -> i."""
    a = torch.zeros(num_nodes, num_nodes)
    a[edge_index[1], edge_index[0]] = 1.0
    a = a + torch.eye(num_nodes)
    d = a.sum(dim=1).pow(-0.5)
    return d.view(-1, 1) * a * d.view(1, -1)


def adj_t_csr(edge_index, num_nodes):
    # GCNConv expects the transposed adjacency: adj_t[target, source].
    return to_torch_csr_tensor(edge_index.flip(0), size=(num_nodes, num_nodes))


def calibrated(conv, x, edge_index):
    conv.train()
    conv(x, edge_index)
    return conv.eval()


# Float equivalence ###########################################################


GCN_KWARGS = [
    dict(),
    dict(improved=True),
    dict(normalize=False, add_self_loops=False),
    dict(bias=False),
    dict(improved=True, bias=False, cached=True),
]


@pytest.mark.parametrize('kwargs', GCN_KWARGS)
def test_no_quantizers_equals_gcn_conv(kwargs):
    torch.manual_seed(0)
    x, edge_index = graph()
    ref = GCNConv(6, 4, **kwargs)
    if ref.bias is not None:
        torch.nn.init.normal_(ref.bias)
    conv = QuantGCNConv(6, 4, **kwargs)
    conv.load_state_dict(ref.state_dict(), strict=True)
    assert torch.equal(conv(x, edge_index), ref(x, edge_index))
    assert list(conv.state_dict()) == list(ref.state_dict())


@pytest.mark.parametrize('kwargs', GCN_KWARGS)
def test_disabled_quantizers_equal_gcn_conv(kwargs):
    torch.manual_seed(0)
    x, edge_index = graph()
    ref = GCNConv(6, 4, **kwargs)
    if ref.bias is not None:
        torch.nn.init.normal_(ref.bias)
    conv = QuantGCNConv(6, 4, **kwargs, **quantizers(4, message=True,
                                                     output=True))
    conv.load_state_dict(ref.state_dict(), strict=True)  # lazy state ok
    conv(x, edge_index)  # quantizers on: output differs
    assert not torch.allclose(conv(x, edge_index), ref(x, edge_index))
    conv.apply(pyg_qgnn.disable_fake_quant)
    for mode in (True, False):
        conv.train(mode)
        ref.train(mode)
        assert torch.equal(conv(x, edge_index), ref(x, edge_index))
        csr = adj_t_csr(edge_index, x.size(0))
        assert torch.equal(conv(x, csr), ref(x, csr))


def test_state_dict_keys_superset_and_parameters_identical():
    ref = GCNConv(6, 4)
    conv = QuantGCNConv(6, 4, **quantizers(8, message=True, output=True))
    conv(*graph())
    assert set(ref.state_dict()) < set(conv.state_dict())
    names = [name for name, _ in conv.named_parameters()]
    assert names == [name for name, _ in ref.named_parameters()]
    assert sorted(names) == ['bias', 'lin.weight']
    assert isinstance(conv.lin, QuantLinear)
    assert conv.weight_quantizer is conv.lin.weight_quantizer
    assert 'lin.weight_quantizer.scale' in conv.state_dict()


def test_constructor_signature_keeps_gcn_conv_arguments():
    ref = inspect.signature(GCNConv.__init__).parameters
    ours = inspect.signature(QuantGCNConv.__init__).parameters
    for name in ('in_channels', 'out_channels', 'improved', 'cached',
                 'add_self_loops', 'normalize', 'bias'):
        assert ours[name].default == ref[name].default
        assert ours[name].kind == ref[name].kind
    assert list(ours)[:8] == list(ref)[:8]
    conv = QuantGCNConv(6, 4, True, False, False, False, False)
    assert conv.improved and not conv.add_self_loops and not conv.normalize
    assert conv.bias is None
    with pytest.raises(ValueError, match='self-loops'):
        QuantGCNConv(6, 4, normalize=False, add_self_loops=True)


def test_from_float_copies_config_and_weights():
    torch.manual_seed(0)
    x, edge_index = graph()
    ref = GCNConv(6, 4, improved=True, bias=False).eval()
    conv = QuantGCNConv.from_float(ref)
    assert conv.improved and conv.bias is None and not conv.training
    assert torch.equal(conv(x, edge_index), ref(x, edge_index))


# The paper's equation ########################################################


@pytest.mark.parametrize('bits', [8, 4])
def test_matches_dense_float_reference(bits):
    torch.manual_seed(0)
    x, edge_index = graph(num_nodes=10, num_edges=25)
    conv = QuantGCNConv(6, 5, **quantizers(bits))
    torch.nn.init.normal_(conv.bias)
    calibrated(conv, x, edge_index)
    x = x.clone().requires_grad_()
    out = conv(x, edge_index)
    assert out.shape == (10, 5)

    x_ref = x.detach().clone().requires_grad_()
    w_ref = conv.lin.weight.detach().clone().requires_grad_()
    adj = dense_gcn_adjacency(edge_index, 10)
    h = fq(x_ref, conv.input_quantizer) @ fq(w_ref, conv.weight_quantizer).t()
    expected = fq(adj @ h, conv.aggregate_quantizer) + conv.bias.detach()
    assert torch.allclose(out, expected, atol=1e-5, rtol=1e-5)
    # Quantization is not a no-op, and the aggregate is quantized before
    # the bias.
    assert not torch.allclose(out, adj @ x.detach() @ conv.lin.weight.t()
                              .detach() + conv.bias.detach(), atol=1e-4)

    g = torch.randn_like(out)
    (out * g).sum().backward()
    (expected * g).sum().backward()
    assert torch.allclose(x.grad, x_ref.grad, atol=1e-5, rtol=1e-5)
    assert torch.allclose(conv.lin.weight.grad, w_ref.grad, atol=1e-5,
                          rtol=1e-5)
    assert conv.lin.weight.grad.abs().sum() > 0


# Message quantizer and adjacency formats #####################################


def test_message_quantizer_changes_output():
    torch.manual_seed(0)
    x, edge_index = graph()
    plain = QuantGCNConv(6, 4)
    torch.nn.init.normal_(plain.bias)
    conv = QuantGCNConv(6, 4, message_quantizer=IntegerQuantizer(8))
    conv.load_state_dict(plain.state_dict(), strict=True)
    calibrated(conv, x, edge_index)
    plain.eval()
    for adj in (edge_index, adj_t_csr(edge_index, x.size(0))):
        a, b = conv(x, adj), plain(x, adj)
        assert not torch.equal(a, b)
        assert (a - b).abs().max() > 1e-5
        assert torch.allclose(a, b, atol=0.05)  # but stays close at 8 bits


def formats(edge_index, num_nodes):
    return dict(edge_index=edge_index, csr=adj_t_csr(edge_index, num_nodes))


@pytest.mark.parametrize('message', [False, True])
def test_csr_agrees_with_edge_index(message):
    torch.manual_seed(0)
    x, edge_index = graph(num_nodes=12, num_edges=40)
    conv = QuantGCNConv(6, 4, **quantizers(8, message=message, output=True))
    calibrated(conv, x, edge_index)
    expected = conv(x, edge_index)
    out = conv(x, adj_t_csr(edge_index, 12))
    assert out.shape == (12, 4)
    assert torch.allclose(out, expected, atol=1e-6)


@pytest.mark.skipif(not WITH_TORCH_SPARSE, reason='torch_sparse not available')
@pytest.mark.parametrize('message', [False, True])
def test_sparse_tensor_agrees_with_edge_index(message):
    from torch_geometric.typing import SparseTensor
    torch.manual_seed(0)
    x, edge_index = graph(num_nodes=12, num_edges=40)
    conv = QuantGCNConv(6, 4, **quantizers(8, message=message, output=True))
    calibrated(conv, x, edge_index)
    adj_t = SparseTensor(row=edge_index[1], col=edge_index[0],
                         sparse_sizes=(12, 12))
    calls = []
    if message:
        conv.message_quantizer.register_forward_hook(
            lambda module, inputs, output: calls.append(inputs[0].shape))
    assert torch.allclose(conv(x, adj_t), conv(x, edge_index), atol=1e-6)
    if message:
        assert calls == [(40 + 12, 4)] * 2


@pytest.mark.parametrize('fmt', ['edge_index', 'csr'])
def test_message_quantizer_is_invoked_per_edge(fmt):
    torch.manual_seed(0)
    x, edge_index = graph(num_nodes=9, num_edges=17)
    conv = QuantGCNConv(6, 4, **quantizers(8, message=True))
    calibrated(conv, x, edge_index)
    calls = []
    conv.message_quantizer.register_forward_hook(
        lambda module, inputs, output: calls.append(tuple(inputs[0].shape)))
    adj = formats(edge_index, 9)[fmt]
    conv(x, adj)
    assert calls == [(17 + 9, 4)]  # one message per edge and self-loop

    # Switched off, the sparse path may use the fused product again; the
    # output is then that of the float aggregation.
    calls.clear()
    conv.message_quantizer.fake_quant_enabled = False
    out = conv(x, adj)
    ref = QuantGCNConv(6, 4, **quantizers(8))
    ref.load_state_dict(conv.state_dict(), strict=False)
    ref.eval()
    assert torch.allclose(out, ref(x, edge_index), atol=1e-6)


def test_message_quantizer_on_sparse_path_in_training():
    torch.manual_seed(0)
    x, edge_index = graph(num_nodes=9, num_edges=17)
    a = QuantGCNConv(6, 4, message_quantizer=IntegerQuantizer(4))
    b = QuantGCNConv(6, 4, message_quantizer=IntegerQuantizer(4))
    b.load_state_dict(a.state_dict(), strict=True)
    x1 = x.clone().requires_grad_()
    x2 = x.clone().requires_grad_()
    out1 = a(x1, edge_index)
    out2 = b(x2, adj_t_csr(edge_index, 9))
    assert torch.allclose(out1, out2, atol=1e-6)
    assert torch.allclose(a.message_quantizer.scale, b.message_quantizer.scale)
    out1.sum().backward()
    out2.sum().backward()
    assert torch.allclose(x1.grad, x2.grad, atol=1e-5)


# Invariances and edge cases ##################################################


@pytest.mark.parametrize('bits', [8, 4])
def test_permutation_equivariance(bits):
    torch.manual_seed(0)
    x, edge_index = graph(num_nodes=15, num_edges=45)
    conv = QuantGCNConv(6, 4, **quantizers(bits, message=True, output=True))
    calibrated(conv, x, edge_index)
    out = conv(x, edge_index)

    perm = torch.randperm(15)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(15)
    out_perm = conv(x[perm], inv[edge_index])
    assert torch.allclose(out_perm, out[perm], atol=1e-5)


@pytest.mark.parametrize('training', [True, False])
def test_empty_graph(training):
    conv = QuantGCNConv(6, 4, **quantizers(8, message=True, output=True))
    x, edge_index = graph()
    calibrated(conv, x, edge_index)
    conv.train(training)
    out = conv(torch.empty(0, 6), torch.empty(2, 0, dtype=torch.long))
    assert out.shape == (0, 4)

    fresh = QuantGCNConv(6, 4, **quantizers(8, message=True)).train(training)
    out = fresh(torch.empty(0, 6), torch.empty(2, 0, dtype=torch.long))
    assert out.shape == (0, 4)


@pytest.mark.parametrize('training', [True, False])
def test_isolated_nodes(training):
    torch.manual_seed(0)
    x = torch.randn(10, 6)
    edge_index = torch.tensor([[0, 1, 2], [1, 2, 0]])  # nodes 3..9 isolated
    conv = QuantGCNConv(6, 4, **quantizers(8, message=True, output=True))
    conv.train(training)
    for adj in (edge_index, adj_t_csr(edge_index, 10)):
        out = conv(x, adj)
        assert out.shape == (10, 4)
        assert torch.isfinite(out).all()
    # No edges at all: every node is isolated.
    out = conv(x, torch.empty(2, 0, dtype=torch.long))
    assert out.shape == (10, 4) and torch.isfinite(out).all()


def test_nan_input_raises_in_training():
    x, edge_index = graph()
    x[3, 2] = float('nan')
    conv = QuantGCNConv(6, 4, **quantizers(8)).train()
    with pytest.raises(ValueError, match='NaN'):
        conv(x, edge_index)


def test_integer_input_raises_type_error():
    _, edge_index = graph()
    conv = QuantGCNConv(6, 4, **quantizers(8))
    with pytest.raises(TypeError, match='floating-point'):
        conv(torch.ones(8, 6, dtype=torch.long), edge_index)


def test_unknown_quantizer_type_raises():
    with pytest.raises(TypeError, match='message_quantizer'):
        QuantGCNConv(6, 4, message_quantizer='int8')


def test_repr_shows_bits():
    conv = QuantGCNConv(6, 4, input_quantizer=IntegerQuantizer(8),
                        message_quantizer=IntegerQuantizer(4))
    assert repr(conv) == 'QuantGCNConv(6, 4, input_bits=8, message_bits=4)'
    assert repr(QuantGCNConv(6, 4)) == 'QuantGCNConv(6, 4)'
