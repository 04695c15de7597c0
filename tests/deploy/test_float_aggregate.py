"""Tests of pyg_qgnn.deploy.float_aggregate: [x_i || aggr_j x_j] bit for bit
what SAGEConv's aggregation gives, in every adjacency format."""
import pytest
import torch
from torch_geometric.nn.conv import SAGEConv

from pyg_qgnn import BinSAGEConv
from pyg_qgnn.deploy import convert, float_aggregate
from pyg_qgnn.deploy.integer_graph import to_csr
from tests.deploy.test_binary import trained
from tests.nn.conv.test_quant_gin_conv import FORMATS, adjacency

pytestmark = pytest.mark.skipif(not float_aggregate.available(),
                                reason='no C compiler')


def graph(num_nodes=400, num_edges=12000, channels=40, seed=0):
    r"""Degrees around 30 (so a changed order of additions would round
    differently), 20 isolated targets, no repeated edge (which a sparse
    matrix would merge into one weighted entry)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(num_nodes, channels, generator=gen) * 10
    edge_index = torch.randint(num_nodes - 20, (2, num_edges), generator=gen)
    key = edge_index[0] * num_nodes + edge_index[1]
    first = torch.ones_like(key, dtype=torch.bool)
    order = key.argsort(stable=True)
    first[order[1:]] = key[order[1:]] != key[order[:-1]]
    return x, edge_index[:, first]  # in random order still


@pytest.mark.parametrize('fmt', FORMATS)
@pytest.mark.parametrize('reduce', ['sum', 'mean', 'max'])
def test_rows_are_sageconv_aggregation_bit_for_bit(reduce, fmt):
    x, edge_index = graph()
    num_nodes = x.size(0)
    conv = SAGEConv(40, 8, aggr='add' if reduce == 'sum' else reduce)
    adj = adjacency(edge_index, fmt, num_nodes)
    expected = conv.propagate(adj, x=(x, x), size=None)
    csr = to_csr(adj, (num_nodes, num_nodes))
    assert csr.weight is None
    x_dst = torch.randn(num_nodes, 3)
    out = float_aggregate.aggregate_rows(csr, x, reduce, x_dst)
    assert torch.equal(out[:, :3], x_dst)
    assert torch.equal(out[:, 3:], expected)
    assert torch.equal(float_aggregate.aggregate_rows(csr, x, reduce),
                       expected)


@pytest.mark.parametrize('fmt', FORMATS)
@pytest.mark.parametrize('aggr', ['mean', 'max', 'sum'])
def test_first_layer_equals_twin(aggr, fmt):
    x, edge_index = graph(num_nodes=120, num_edges=2000, channels=16)
    adj = adjacency(edge_index, fmt, x.size(0))
    twin = trained(BinSAGEConv(16, 8, aggr=aggr, input_quantizer=None,
                               batch_norm=False, output_quantizer='sign'),
                   x, adj)
    assert torch.equal(convert(twin)(x, adj), convert(twin).finish(
        torch.nn.functional.linear(torch.cat(
            [x, twin.propagate(adj, x=(x, x))], -1),
            twin.binary_weight().detach())))


def test_bipartite_targets_and_empty_graphs():
    x, edge_index = graph(num_nodes=50, num_edges=300, channels=4)
    csr = to_csr(edge_index[:, edge_index[1] < 10], (50, 10))
    with pytest.raises(ValueError, match="'x_dst' must have 10 rows"):
        float_aggregate.aggregate_rows(csr, x, 'sum', x)
    out = float_aggregate.aggregate_rows(csr, x, 'mean', x[:10])
    assert out.shape == (10, 8)
    empty = to_csr(torch.empty(2, 0, dtype=torch.long), (50, 0))
    assert float_aggregate.aggregate_rows(empty, x, 'max').shape == (0, 4)
