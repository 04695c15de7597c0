"""Tests of the LSP loss (Eq. 6-7, 22) against per-node loops."""
import pytest
import torch

from pyg_qgnn import DynamicXorEdgeConv
from pyg_qgnn.distill import GraphRecorder, LSPLoss, edge_similarity, \
    local_structure, lsp_loss
from pyg_qgnn.quantizers import pack_bits, unpack_bits


def ref_sim(kind, a, b):
    if kind == 'rbf':
        return torch.exp(-(a - b).pow(2).sum())
    return torch.exp(-0.5 * (1 - a * b).sum())


def ref_lsp(x_s, x_t, e_s, e_t, sim_s, sim_t):
    r"""Eq. 7 node by node over the union of both neighbourhoods."""
    pairs = set(map(tuple, e_s.t().tolist())) | set(map(tuple,
                                                        e_t.t().tolist()))
    total = x_s.new_zeros(())
    for i in range(x_s.size(0)):
        nbrs = sorted(j for j, c in pairs if c == i)
        if not nbrs:
            continue
        s = torch.stack([ref_sim(sim_s, x_s[i], x_s[j]) for j in nbrs])
        t = torch.stack([ref_sim(sim_t, x_t[i], x_t[j]) for j in nbrs])
        ls_s, ls_t = torch.softmax(s, 0), torch.softmax(t, 0)  # Eq. 6
        total = total + (ls_s * torch.log(ls_s / ls_t)).sum()
    return total / x_s.size(0)


def random_graph(num_nodes, k, seed):
    gen = torch.Generator().manual_seed(seed)
    sources = torch.stack([torch.randperm(num_nodes, generator=gen)[:k]
                           for _ in range(num_nodes)])
    return torch.stack([sources.reshape(-1),
                        torch.arange(num_nodes).repeat_interleave(k)])


@pytest.mark.parametrize('sim_s,sim_t', [('rbf', 'rbf'), ('hamming', 'rbf'),
                                         ('hamming', 'hamming')])
def test_lsp_loss_values_and_gradients_over_the_union(sim_s, sim_t):
    torch.manual_seed(0)
    x_s = torch.tanh(torch.randn(9, 4)).requires_grad_()  # in [-1, 1]
    x_t = torch.tanh(torch.randn(9, 6))
    e_s, e_t = random_graph(9, 3, 0), random_graph(9, 3, 1)
    loss = lsp_loss(x_s, x_t, e_s, e_t, sim_s, sim_t)
    x_ref = x_s.detach().clone().requires_grad_()
    ref = ref_lsp(x_ref, x_t, e_s, e_t, sim_s, sim_t)
    assert torch.allclose(loss, ref, atol=1e-6)
    loss.backward()
    ref.backward()
    assert torch.allclose(x_s.grad, x_ref.grad, atol=1e-6)
    assert float(loss.detach()) > 0


def test_same_features_and_similarity_give_zero():
    x = torch.randn(8, 3)
    e = random_graph(8, 3, 0)
    assert float(lsp_loss(x, x.clone(), e, random_graph(8, 2, 1))) == \
        pytest.approx(0.0, abs=1e-7)


def test_hamming_similarity_is_exp_minus_popcount_on_binary_features():
    torch.manual_seed(0)
    x = torch.where(torch.randn(6, 11) >= 0, 1.0, -1.0)
    e = random_graph(6, 3, 0)
    bits = pack_bits((x > 0).to(torch.uint8), 1)
    differing = unpack_bits(bits[e[0]] ^ bits[e[1]], 1, 11).sum(-1)
    assert torch.allclose(edge_similarity(x, e, 'hamming'),
                          torch.exp(-differing.float()))


def test_local_structure_is_a_distribution_per_neighbourhood():
    x = torch.randn(7, 3)
    e = random_graph(7, 4, 0)
    ls = local_structure(x, e).exp()
    sums = torch.zeros(7).index_add_(0, e[1], ls)
    assert torch.allclose(sums, torch.ones(7), atol=1e-6)


def test_graph_recorder_collects_features_and_graphs_of_dynamic_layers():
    torch.manual_seed(0)
    model = torch.nn.ModuleList([
        DynamicXorEdgeConv(3, 8, k=3, input_quantizer=None),
        DynamicXorEdgeConv(8, 8, k=3)])
    pos = torch.randn(10, 3)
    batch = torch.tensor([0] * 4 + [1] * 6)
    with GraphRecorder(model) as recorder:
        h = model[0](pos, batch)
        model[1](h, batch)
    assert len(recorder.graphs) == 2
    assert torch.equal(recorder.graphs[0][0], pos)
    assert torch.equal(recorder.graphs[1][0], h)  # binary features
    assert recorder.graphs[1][1].shape == (2, 4 * 3 + 6 * 3)
    model[0](pos, batch)
    assert len(recorder.graphs) == 2  # hooks removed


def test_bad_arguments_name_the_argument():
    x, e = torch.randn(5, 3), random_graph(5, 2, 0)
    with pytest.raises(ValueError, match="'student_x' and 'teacher_x'"):
        lsp_loss(x, torch.randn(4, 3), e)
    with pytest.raises(ValueError, match="'similarity'"):
        lsp_loss(x, x, e, similarity='cosine')
    with pytest.raises(ValueError, match="'teacher_similarity'"):
        LSPLoss(teacher_similarity='l1')
    with pytest.raises(ValueError, match="'teacher_edge_index'"):
        lsp_loss(x, x, e, e + 10)


def test_hamming_similarity_rejects_real_features_beyond_one():
    e = random_graph(5, 2, 0)
    with pytest.raises(ValueError, match="'hamming' similarity needs"):
        edge_similarity(torch.randn(5, 3) * 3, e, 'hamming')
    edge_similarity(torch.tanh(torch.randn(5, 3)), e, 'hamming')  # relaxed
