"""Tests of the dynamic kNN graph and of DynamicBinEdgeConv and
DynamicXorEdgeConv."""
import importlib

import pytest
import torch
from torch_geometric.nn import EdgeConv

from pyg_qgnn import (
    BinEdgeConv,
    DynamicBinEdgeConv,
    DynamicXorEdgeConv,
    XorEdgeConv,
    disable_fake_quant,
)
from pyg_qgnn.nn.conv.knn_graph import KNNGraph, knn_graph

# The module (pyg_qgnn.deploy.knn is also the name of a function).
deploy_knn = importlib.import_module('pyg_qgnn.deploy.knn')


def brute_force_knn(x, k, batch, metric):
    r"""Every point's min(k, n) nearest points of its cloud (itself
    included), ordered by (distance, index), in float64 Python loops."""
    x = x.double()
    sources, targets = [], []
    for cloud in batch.unique().tolist():
        members = (batch == cloud).nonzero().view(-1).tolist()
        for i in members:
            def dist(j):
                if metric == 'l2':
                    return float((x[i] - x[j]).pow(2).sum())
                return float(x.size(1) - x[i] @ x[j])
            nearest = sorted(members, key=lambda j: (dist(j), j))[:k]
            sources += nearest
            targets += [i] * len(nearest)
    return torch.tensor([sources, targets])


def clouds(sizes, dim, seed=0, binary=False):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(sum(sizes), dim, generator=gen)
    if binary:
        x = torch.where(x >= 0, 1.0, -1.0)
    batch = torch.arange(len(sizes)).repeat_interleave(torch.tensor(sizes))
    return x, batch


LAYOUTS = [[12], [5, 1, 8], [3, 9, 2, 7]]


# knn_graph ###################################################################


@pytest.mark.parametrize('metric', ['l2', 'xor'])
@pytest.mark.parametrize('sizes', LAYOUTS)
@pytest.mark.parametrize('k', [1, 4, 20])
def test_knn_graph_matches_brute_force_on_real_features(metric, sizes, k):
    x, batch = clouds(sizes, 5)
    edge_index = knn_graph(x, k, batch, metric)
    assert torch.equal(edge_index, brute_force_knn(x, k, batch, metric))


@pytest.mark.parametrize('metric', ['l2', 'xor'])
@pytest.mark.parametrize('sizes', LAYOUTS)
@pytest.mark.parametrize('dim', [3, 13])
def test_knn_graph_on_binary_features_breaks_ties_by_lower_index(metric, sizes,
                                                                 dim):
    x, batch = clouds(sizes, dim, binary=True)
    ref = brute_force_knn(x, 4, batch, 'xor')  # Hamming order
    assert torch.equal(knn_graph(x, 4, batch, metric, binary=True), ref)
    assert torch.equal(deploy_knn.hamming_knn_graph(x, 4, batch), ref)


def test_small_clouds_get_all_their_points_and_batch_defaults_to_one_cloud():
    x, batch = clouds([2, 6], 3)
    edge_index = knn_graph(x, 5, batch)
    degree = torch.bincount(edge_index[1], minlength=8)
    assert degree.tolist() == [2, 2, 5, 5, 5, 5, 5, 5]
    assert bool((batch[edge_index[0]] == batch[edge_index[1]]).all())
    one_cloud = torch.zeros(6, dtype=torch.long)
    assert torch.equal(knn_graph(x[2:], 3), knn_graph(x[2:], 3, one_cloud))


def test_hamming_eval_path_uses_packed_bits_of_deploy_knn(monkeypatch):
    x, batch = clouds([7, 9], 10, binary=True)
    calls = []
    real = deploy_knn.hamming_knn

    def spy(codes, *args, **kwargs):
        calls.append(codes)
        return real(codes, *args, **kwargs)

    monkeypatch.setattr(deploy_knn, 'hamming_knn', spy)
    conv = DynamicXorEdgeConv(10, 4, k=4).eval()
    graphs = []
    conv.knn_graph.register_forward_hook(
        lambda m, args, out: graphs.append(out))
    conv(x, batch)
    assert len(calls) == 1 and calls[0].dtype == torch.uint8
    assert calls[0].shape == (16, 2)  # 10 bits in 2 bytes per point
    assert torch.equal(graphs[0], brute_force_knn(x, 4, batch, 'xor'))
    conv.train()
    conv(x, batch)
    assert len(calls) == 1  # training uses the relaxation


@pytest.mark.parametrize('k', [0, -2, 1.5, True])
def test_bad_k_names_k(k):
    with pytest.raises(ValueError, match="'k' must be a positive int"):
        knn_graph(torch.randn(4, 2), k)
    with pytest.raises(ValueError, match="'k'"):
        DynamicBinEdgeConv(2, 3, k)


def test_bad_batch_and_features_name_the_argument():
    x = torch.randn(6, 3)
    with pytest.raises(ValueError, match="'batch' must be sorted"):
        knn_graph(x, 2, torch.tensor([0, 1, 0, 1, 1, 1]))
    with pytest.raises(ValueError, match="'batch' must have one entry per "
                       "point: shape \\(6,\\)"):
        knn_graph(x, 2, torch.tensor([0, 0, 1]))
    with pytest.raises(TypeError, match="'batch' must be an integer tensor"):
        knn_graph(x, 2, torch.zeros(6))
    x[3, 1] = float('nan')
    with pytest.raises(ValueError, match="'x' contains NaN"):
        knn_graph(x, 2)
    with pytest.raises(ValueError, match="'metric'"):
        knn_graph(torch.randn(6, 3), 2, metric='cosine')
    with pytest.raises(ValueError, match="'knn'"):
        DynamicXorEdgeConv(3, 4, 2, knn='hamming')
    with pytest.raises(ValueError, match="'x' must hold only -1 and \\+1"):
        knn_graph(torch.randn(6, 3), 2, binary=True)


# Dynamic layers ##############################################################


@pytest.mark.parametrize('training', [True, False])
def test_dynamic_bin_edge_conv_is_bin_edge_conv_on_the_knn_graph(training):
    torch.manual_seed(0)
    x, batch = clouds([9, 4, 11], 3)
    dynamic = DynamicBinEdgeConv(3, 8, k=5, input_quantizer=None)
    edge_conv = EdgeConv(dynamic.nn)  # shares dynamic.nn
    static = BinEdgeConv(3, 8, input_quantizer=None)
    static.load_state_dict(dynamic.state_dict())
    dynamic.train(training)
    static.train(training)
    graph = brute_force_knn(x, 5, batch, 'l2')
    assert torch.equal(dynamic(x, batch), static(x, graph))
    dynamic.apply(disable_fake_quant)
    assert torch.equal(dynamic(x, batch), edge_conv(x, graph))


@pytest.mark.parametrize('norm', ['after', 'before'])
@pytest.mark.parametrize('knn', ['l2', 'xor'])
def test_dynamic_xor_edge_conv_graph_is_hamming_in_training_and_eval(norm,
                                                                     knn):
    torch.manual_seed(0)
    x, batch = clouds([9, 4, 11], 16, seed=1)
    conv = DynamicXorEdgeConv(16, 8, k=5, norm=norm, knn=knn)
    static = XorEdgeConv(16, 8, norm=norm)
    static.load_state_dict(conv.state_dict())
    graphs = []
    conv.knn_graph.register_forward_hook(
        lambda m, args, out: graphs.append(out))
    ref = brute_force_knn(torch.where(x >= 0, 1.0, -1.0), 5, batch, 'xor')
    for training in (True, False):
        conv.train(training)
        static.train(training)
        assert torch.equal(conv(x, batch), static(x, ref))
        assert torch.equal(graphs[-1], ref)


def test_dynamic_xor_edge_conv_relaxed_stage_uses_real_distances():
    torch.manual_seed(0)
    x, batch = clouds([9, 11], 6)
    conv = DynamicXorEdgeConv(6, 4, k=3, input_quantizer=None).eval()
    graphs = []
    conv.knn_graph.register_forward_hook(
        lambda m, args, out: graphs.append(out))
    conv(x, batch)
    assert torch.equal(graphs[-1], brute_force_knn(x, 3, batch, 'l2'))


def within_cloud_permutation(batch, seed=0):
    gen = torch.Generator().manual_seed(seed)
    perm = torch.arange(batch.numel())
    for cloud in batch.unique().tolist():
        idx = (batch == cloud).nonzero().view(-1)
        perm[idx] = idx[torch.randperm(idx.numel(), generator=gen)]
    return perm


def test_permutation_equivariance_within_clouds():
    torch.manual_seed(0)
    x, batch = clouds([9, 4, 11], 3)
    perm = within_cloud_permutation(batch)
    rf = DynamicBinEdgeConv(3, 8, k=5).eval()
    assert torch.equal(rf(x[perm], batch), rf(x, batch)[perm])

    # Binary features without ties (a tie at the k-th neighbour could pick
    # either point): point p of a cloud has +1 on the first 2^p of 64
    # channels, so the Hamming distances |2^p - 2^q| are all distinct.
    ones = torch.tensor([1, 2, 4, 8, 16, 32, 1, 2, 4, 8, 16])
    x = torch.where(torch.arange(64) < ones.view(-1, 1), 1.0, -1.0)
    x = x[:, torch.randperm(64)]
    batch = torch.tensor([0] * 6 + [1] * 5)
    perm = within_cloud_permutation(batch, seed=1)
    for norm in ('after', 'before'):
        bf = DynamicXorEdgeConv(64, 8, k=3, norm=norm, knn='xor').eval()
        assert torch.equal(bf(x[perm], batch), bf(x, batch)[perm])


def test_gradients_flow_through_features_not_through_the_graph():
    torch.manual_seed(0)
    x, batch = clouds([9, 11], 4)
    x.requires_grad_()
    conv = DynamicXorEdgeConv(4, 6, k=3)
    conv(x, batch).sum().backward()
    assert x.grad is not None and bool(x.grad.abs().sum() > 0)


def test_repr_shows_k_metric_and_bits():
    assert repr(DynamicBinEdgeConv(3, 8, 20)) == (
        "DynamicBinEdgeConv(3, 8, k=20, knn='l2', aggr='max', input_bits=1, "
        "weight_bits=1)")
    assert repr(DynamicXorEdgeConv(8, 8, 20, norm='before', knn='xor')) == (
        "DynamicXorEdgeConv(8, 8, k=20, knn='xor', aggr='max', "
        "norm='before', input_bits=1, weight_bits=1, output_bits=1)")
    assert repr(KNNGraph(4, 'xor')) == "KNNGraph(k=4, metric='xor')"
