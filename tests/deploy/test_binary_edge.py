"""Tests of the fast exact path of the deployed RF edge convolution
(pyg_qgnn.deploy.binary_edge): the rebuilt kNN graph has the twin's
neighbours, the thresholded split products equal the general path's, and
the deployed layers and model equal their twins on it."""
import pytest
import torch

from pyg_qgnn.deploy import DeployedDynamicBinEdgeConv, convert
from pyg_qgnn.deploy import binary_edge
from pyg_qgnn.deploy.binary import max_by_target
from pyg_qgnn.deploy.binary_edge import (
    select_kernel,
    threshold_products,
    twin_knn_graph,
)
from pyg_qgnn.deploy.binary_ops import matmul_codes, sign_codes
from pyg_qgnn.nn.conv.bin_edge_conv import BinEdgeConv
from pyg_qgnn.nn.conv.dynamic_bin_edge_conv import DynamicBinEdgeConv
from pyg_qgnn.nn.conv.knn_graph import KNNGraph
from pyg_qgnn.nn.models.dgcnn import BinaryDGCNN
from pyg_qgnn.quantizers import SignQuantizer
from tests.deploy.test_binary import trained

needs_kernel = pytest.mark.skipif(select_kernel() is None,
                                  reason='no C compiler for the kNN kernel')


def equal_clouds(clouds=3, points=24, channels=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(clouds * points, channels, generator=gen)
    return x, torch.arange(clouds).repeat_interleave(points)


def neighbour_sets(edge_index, num_points):
    r"""Each point's neighbours, sorted: the graph up to edge order."""
    source, target = edge_index
    order = torch.argsort(target * num_points + source)
    return torch.stack([source[order], target[order]])


def spy_on_kernel(monkeypatch):
    r"""Counts the calls of the selection kernel (the fast path taken)."""
    calls = []
    kernel = select_kernel()

    def counted():
        def call(*args):
            calls.append(args)
            return kernel(*args)
        return call

    monkeypatch.setattr(binary_edge, 'select_kernel', counted)
    return calls


# The kNN graph ###############################################################


@needs_kernel
@pytest.mark.parametrize('metric', ['l2', 'xor'])
@pytest.mark.parametrize('k', [1, 7, 24])
def test_twin_knn_graph_has_the_twins_neighbours(monkeypatch, metric, k):
    x, batch = equal_clouds()
    knn_graph = KNNGraph(k, metric)
    calls = spy_on_kernel(monkeypatch)
    edge_index = twin_knn_graph(knn_graph, x, batch)
    assert calls, 'the kernel path was not taken'
    expected = knn_graph(x, batch)
    assert edge_index.dtype == torch.long
    assert torch.equal(edge_index[1], expected[1])  # grouped by point
    assert torch.equal(neighbour_sets(edge_index, x.size(0)),
                       neighbour_sets(expected, x.size(0)))


@needs_kernel
@pytest.mark.parametrize('threads', [1, 2])
def test_ties_take_the_twins_topk(monkeypatch, threads):
    # Points on a small integer grid: many equal distances, so the k-th
    # neighbour is often tied and those rows go back to torch.topk.
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(-2, 3, (4 * 30, 3), generator=gen).float()
    x[5] = float(2**70)  # overflowing norms: inf and NaN distances
    batch = torch.arange(4).repeat_interleave(30)
    knn_graph = KNNGraph(6)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        calls = spy_on_kernel(monkeypatch)
        edge_index = twin_knn_graph(knn_graph, x, batch)
    finally:
        torch.set_num_threads(previous)
    assert calls
    assert torch.equal(neighbour_sets(edge_index, x.size(0)),
                       neighbour_sets(knn_graph(x, batch), x.size(0)))


@pytest.mark.parametrize('case', ['unequal', 'few points', 'float64',
                                  'no kernel'])
def test_twin_knn_graph_falls_back_to_the_twin(monkeypatch, case):
    x, batch = equal_clouds(points=10)
    k = 4
    if case == 'unequal':
        batch = torch.tensor([0] * 12 + [1] * 18)
    elif case == 'few points':
        k = 11
    elif case == 'float64':
        x = x.double()
    else:
        monkeypatch.setattr(binary_edge, 'select_kernel', lambda: None)
    knn_graph = KNNGraph(k)
    assert torch.equal(twin_knn_graph(knn_graph, x, batch),
                       knn_graph(x, batch))


def test_twin_knn_graph_rejects_what_the_twin_rejects():
    x, batch = equal_clouds()
    with pytest.raises(ValueError, match="'batch' must be sorted"):
        twin_knn_graph(KNNGraph(3), x, batch.flip(0))
    x[2, 1] = float('nan')
    with pytest.raises(ValueError, match="'x'.*NaN"):
        twin_knn_graph(KNNGraph(3), x, batch)


# Thresholded products ########################################################


def general_products(x, edge_index, block, directions, group):
    r"""The general path: sign(BN([x_i || x_j - x_i])) on every edge, the
    full-width integer product, then the maximum."""
    source, target = edge_index
    x_i, x_j = x[1][target], x[0][source]
    codes = sign_codes(block.normalize(torch.cat([x_i, x_j - x_i], -1)))
    products = matmul_codes(codes, block.weight_codes(), block.in_channels)
    return max_by_target(products, target, x[1].size(0), directions, group)


def deployed_block(channels=6, out_channels=8, seed=0):
    twin = BinEdgeConv(channels, out_channels).nn
    with torch.no_grad():
        gen = torch.Generator().manual_seed(seed)
        for name in ('running_mean', 'weight', 'bias'):
            getattr(twin.norm, name).normal_(generator=gen)
        twin.norm.running_var.uniform_(0.1, 2.0, generator=gen)
        twin.norm.weight[::3] *= -1  # flipped thresholds
        twin.weight.normal_(generator=gen)
        twin.rescale.alpha[1::2] *= -1  # minimum over edges
    return convert(twin.eval())


def use_path(monkeypatch, path):
    r"""Selects the path of grouped threshold_products."""
    if path == 'torch':
        monkeypatch.setattr(binary_edge, 'edge_kernel', lambda: None)
        monkeypatch.setattr(binary_edge, '_EDGE_CHUNK', 12)  # many chunks
    elif binary_edge.edge_kernel() is None:
        pytest.skip('no C compiler for the edge kernel')
    monkeypatch.setattr(binary_edge, '_EDGE_VECTOR', int(path == 'vector'))


@pytest.mark.parametrize('channels', [6, 70])
@pytest.mark.parametrize('path', ['vector', 'scalar', 'torch', 'ungrouped'])
def test_threshold_products_equal_the_general_path(monkeypatch, path,
                                                   channels):
    use_path(monkeypatch, path)
    grouped = path != 'ungrouped'
    block = deployed_block(channels)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(20, channels, generator=gen)
    k = 4
    source = torch.randint(20, (20 * k, ), generator=gen)
    edge_index = torch.stack([source, torch.arange(20).repeat_interleave(k)])
    group = k if grouped else None
    directions = block.monotone_directions()
    assert bool((directions < 0).any())
    thresholds = block.input_thresholds(x.dtype)
    assert thresholds is not None and bool((thresholds[1] < 0).any())
    # Node 0's edges all come from node 1 with x_1 - x_0 exactly at the
    # thresholds, where >= and > part.
    x[0], x[1] = 0.0, thresholds[0][channels:]
    edge_index[0, :k] = 1
    out = threshold_products((x, x), edge_index, block.weight_codes(),
                             thresholds, directions, group)
    assert out.dtype == torch.int32
    assert torch.equal(out, general_products((x, x), edge_index, block,
                                             directions, group))


@pytest.mark.parametrize('path', ['vector', 'torch'])
def test_grouped_threshold_products_check_their_edges(monkeypatch, path):
    use_path(monkeypatch, path)
    block = deployed_block()
    x = torch.randn(5, 6)
    args = (block.weight_codes(), block.input_thresholds(torch.float32),
            block.monotone_directions())
    edge_index = torch.stack([torch.arange(10) % 5,
                              torch.arange(5).repeat_interleave(2)])
    with pytest.raises(ValueError, match="'group' = 3.*15 edges.*got 10"):
        threshold_products((x, x), edge_index, *args, 3)
    edge_index[0, 3] = 7
    with pytest.raises(IndexError):
        threshold_products((x, x), edge_index, *args, 2)


def test_threshold_products_bipartite_and_isolated_targets():
    block = deployed_block()
    gen = torch.Generator().manual_seed(3)
    x = (torch.randn(15, 6, generator=gen), torch.randn(9, 6, generator=gen))
    edge_index = torch.stack([torch.randint(15, (30, ), generator=gen),
                              torch.randint(7, (30, ), generator=gen)])
    directions = block.monotone_directions()
    out = threshold_products(x, edge_index, block.weight_codes(),
                             block.input_thresholds(torch.float32),
                             directions, None)
    expected = general_products(x, edge_index, block, directions, None)
    # Targets 7 and 8 have no edge: the node part only (zeroed later).
    assert torch.equal(out[:7], expected[:7])


def test_threshold_products_follow_the_split_equation():
    # W [s(x_i) || s(x_j - x_i)] = W_a s(x_i) + W_b s(x_j - x_i), s the
    # sign of the batch norm: a plain float reference on one edge each.
    block = deployed_block(channels=3, out_channels=4)
    x = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.0, -0.5]])
    edge_index = torch.tensor([[1, 0], [0, 1]])
    norm = block.norm
    weight = block.weight_codes().float()
    expected = []
    for j, i in edge_index.t().tolist():
        edge = torch.cat([x[i], x[j] - x[i]])
        normalized = (edge - norm.running_mean) / torch.sqrt(
            norm.running_var + norm.eps) * norm.weight + norm.bias
        expected.append(weight @ torch.where(normalized >= 0, 1.0, -1.0))
    ones = torch.ones(4, dtype=torch.long)
    out = threshold_products((x, x), edge_index, block.weight_codes(),
                             block.input_thresholds(torch.float32), ones, 1)
    assert torch.equal(out.float(), torch.stack(expected))


def test_input_thresholds_apply_only_to_plain_signs():
    block = deployed_block()
    assert block.input_thresholds(torch.float32) is not None
    with torch.no_grad():
        block.norm.weight[2] = 0.0  # constant but NaN at infinity
        block.norm.bias[2] = 1.0
    assert block.input_thresholds(torch.float32) is None
    twin = BinEdgeConv(6, 8, input_quantizer=SignQuantizer(balance='mean'))
    assert convert(twin.nn.eval()).input_thresholds(torch.float32) is None
    twin = BinEdgeConv(6, 8, input_quantizer=None)
    assert convert(twin.nn.eval()).input_thresholds(torch.float32) is None


# Layers and model ############################################################


def assert_equals_twin(twin, x, batch):
    deployed = convert(twin)
    assert isinstance(deployed, DeployedDynamicBinEdgeConv)
    assert torch.equal(deployed(x, batch), twin(x, batch))
    return deployed


@needs_kernel
@pytest.mark.parametrize('knn', ['l2', 'xor'])
def test_dynamic_layer_on_the_fast_path_equals_twin(monkeypatch, knn):
    x, batch = equal_clouds(channels=16)
    twin = trained(DynamicBinEdgeConv(16, 8, k=6, knn=knn), x, batch)
    with torch.no_grad():
        twin.nn.norm.weight[::4] *= -1
        twin.nn.rescale.alpha[::3] *= -1
    calls = spy_on_kernel(monkeypatch)
    assert_equals_twin(twin, torch.randn_like(x), batch)
    assert calls


def test_dynamic_layer_with_a_constant_channel_takes_the_general_path():
    x, batch = equal_clouds(channels=16)
    twin = trained(DynamicBinEdgeConv(16, 8, k=6), x, batch)
    with torch.no_grad():
        twin.nn.norm.weight[3] = 0.0
        twin.nn.norm.bias[3] = 0.5
    deployed = assert_equals_twin(twin, torch.randn_like(x), batch)
    assert deployed.nn.input_thresholds(torch.float32) is None


def test_fast_path_is_permutation_equivariant_within_clouds():
    x, batch = equal_clouds(channels=16)
    twin = trained(DynamicBinEdgeConv(16, 8, k=6), x, batch)
    deployed = convert(twin)
    x = torch.randn_like(x)
    perm = torch.cat([torch.randperm(24) + 24 * c for c in range(3)])
    assert torch.equal(deployed(x[perm], batch), deployed(x, batch)[perm])


@needs_kernel
def test_rf_dgcnn_on_equal_clouds_equals_twin_exactly(monkeypatch):
    x, batch = equal_clouds(clouds=3, points=20, channels=3)
    torch.manual_seed(0)
    model = BinaryDGCNN('rf', num_classes=4, k=5, conv_channels=(8, 16),
                        embed_channels=24, hidden_channels=(16, ))
    model = trained(model, x, batch)
    calls = spy_on_kernel(monkeypatch)
    deployed = convert(model)
    x = torch.randn_like(x)
    assert torch.equal(deployed(x, batch), model(x, batch))
    assert len(calls) >= 2  # one graph per layer, at least
