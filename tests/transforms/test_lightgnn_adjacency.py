"""Tests of LightGNNAdjacency (LightGNN Eq. 4)."""
import math

import pytest
import torch
import torch_geometric.transforms as T
from torch.utils.data import IterDataPipe
from torch.utils.data.datapipes.iter import IterableWrapper
from torch_geometric.data import Data, HeteroData
from torch_geometric.nn.conv.gcn_conv import gcn_norm

from pyg_qgnn.transforms import LightGNNAdjacency

R2, R6 = math.sqrt(2), math.sqrt(6)


def hand_graph(weight=None):
    # Nodes 0..3, node 3 isolated; e4 duplicates e0.
    #   e0 (0,1)  e1 (1,0)  e2 (0,2)  e3 (2,0)  e4 (0,1)
    # In-degrees (bincount(edge_index[1])): d0 = 2 (e1, e3), d1 = 2 (e0, e4),
    # d2 = 1 (e2), d3 = 0.
    data = Data(edge_index=torch.tensor([[0, 1, 0, 2, 0], [1, 0, 2, 0, 1]]),
                num_nodes=4, x=torch.randn(4, 3))
    if weight is not None:
        data.edge_weight = weight
    return data


def test_unweighted_is_lightgcn_norm():
    out = LightGNNAdjacency()(hand_graph())
    # 1/sqrt(d_src d_dst): e0 1/sqrt(2*2), e1 1/sqrt(2*2), e2 1/sqrt(2*1),
    # e3 1/sqrt(1*2), e4 1/sqrt(2*2).
    expected = torch.tensor([0.5, 0.5, 1 / R2, 1 / R2, 0.5])
    assert torch.allclose(out.edge_weight, expected)
    _, gcn = gcn_norm(hand_graph().edge_index, None, 4, add_self_loops=False)
    assert torch.allclose(out.edge_weight, gcn)


def test_weighted_hand_graph_and_out_attr():
    weight = torch.tensor([1.0, 2.0, -3.0, 4.0, 0.5])
    out = LightGNNAdjacency(out_attr='norm')(hand_graph(weight.clone()))
    # w_e / sqrt(d_src d_dst) with the same degrees as above: weights do
    # not enter the degrees.
    expected = torch.tensor([0.5, 1.0, -3 / R2, 4 / R2, 0.25])
    assert torch.allclose(out.norm, expected)
    assert torch.equal(out.edge_weight, weight)  # input left as it was
    replaced = LightGNNAdjacency()(hand_graph(weight.clone()))
    assert torch.allclose(replaced.edge_weight, expected)
    custom = LightGNNAdjacency(weight_attr='w', out_attr='a_hat')(
        Data(edge_index=hand_graph().edge_index, num_nodes=4, w=weight))
    assert torch.allclose(custom.a_hat, expected)


def test_zero_degree_gives_zero_not_nan():
    # (3, 0) alone: node 3 has in-degree 0, so the edge gets 0, not inf.
    data = Data(edge_index=torch.tensor([[3, 1], [0, 0]]), num_nodes=5)
    out = LightGNNAdjacency()(data)
    # e0: d3 = 0 -> 0; e1: d1 = 0 -> 0 as well (graph not symmetric).
    assert out.edge_weight.tolist() == [0.0, 0.0]
    empty = LightGNNAdjacency()(Data(edge_index=torch.zeros(2, 0).long(),
                                     num_nodes=3))
    assert empty.edge_weight.numel() == 0
    double = LightGNNAdjacency()(hand_graph(
        torch.ones(5, dtype=torch.float64)))
    assert double.edge_weight.dtype == torch.float64
    assert torch.isfinite(double.edge_weight).all()


def hetero_graph():
    # Users 0..2 (user 2 isolated), items 0..1; the last edge duplicates
    # (u1, i0). deg_user: u0 2, u1 2, u2 0; deg_item: i0 3, i1 1.
    data = HeteroData()
    data['user'].num_nodes = 3
    data['item'].num_nodes = 2
    edge_index = torch.tensor([[0, 0, 1, 1], [0, 1, 0, 0]])
    data['user', 'rates', 'item'].edge_index = edge_index
    data['user', 'rates', 'item'].edge_weight = torch.tensor(
        [2.0, 1.0, 1.0, 3.0])
    data['item', 'rev_rates', 'user'].edge_index = edge_index.flip(0)
    return data


def test_hetero_bipartite_degrees():
    out = LightGNNAdjacency(out_attr='norm')(hetero_graph())
    # D_U^-1/2 (A . W) D_V^-1/2: (u0,i0) 2/sqrt(2*3), (u0,i1) 1/sqrt(2*1),
    # (u1,i0) 1/sqrt(2*3), duplicate (u1,i0) 3/sqrt(2*3).
    assert torch.allclose(out['rates'].norm,
                          torch.tensor([2 / R6, 1 / R2, 1 / R6, 3 / R6]))
    # The reverse type: source degrees of items, destination of users.
    assert torch.allclose(out['rev_rates'].norm,
                          torch.tensor([1 / R6, 1 / R2, 1 / R6, 1 / R6]))
    only = LightGNNAdjacency(out_attr='norm', edge_types=[
        ('item', 'rev_rates', 'user')])(hetero_graph())
    assert 'norm' not in only['rates'] and 'norm' in only['rev_rates']


def test_validation():
    for weight, match in [(torch.ones(4), r"one value per edge.*\(5,\)"),
                          (torch.ones(5, 1), 'one value per edge'),
                          (torch.ones(5, dtype=torch.long),
                           'floating point'),
                          (torch.tensor([1.0, float('nan'), 1, 1, 1]),
                           'finite'),
                          (torch.tensor([1.0, float('inf'), 1, 1, 1]),
                           'finite')]:
        with pytest.raises(ValueError, match=f"'edge_weight' must.*{match}"):
            LightGNNAdjacency()(hand_graph(weight))
    with pytest.raises(ValueError, match="'weight_attr' must be a non-empty"):
        LightGNNAdjacency(weight_attr='')
    with pytest.raises(ValueError, match="'out_attr'"):
        LightGNNAdjacency(out_attr=None)
    with pytest.raises(ValueError, match="'edge_types' applies to HeteroData"):
        LightGNNAdjacency(edge_types=[('a', 'b', 'c')])(hand_graph())
    with pytest.raises(ValueError, match='not an edge type'):
        LightGNNAdjacency(edge_types=[('a', 'b', 'c')])(hetero_graph())
    with pytest.raises(ValueError, match="no 'edge_index'"):
        LightGNNAdjacency()(Data(num_nodes=3))


def test_compose_datapipe_and_repr():
    out = T.Compose([T.ToUndirected(), LightGNNAdjacency()])(hand_graph())
    assert torch.isfinite(out.edge_weight).all()
    assert 'lightgnn_adjacency' in IterDataPipe.functions
    piped = list(IterableWrapper([hand_graph()]).lightgnn_adjacency())
    assert torch.allclose(piped[0].edge_weight,
                          torch.tensor([0.5, 0.5, 1 / R2, 1 / R2, 0.5]))
    assert repr(LightGNNAdjacency()) == (
        "LightGNNAdjacency(weight_attr='edge_weight', "
        "out_attr='edge_weight')")
    assert 'edge_types' in repr(LightGNNAdjacency(
        edge_types=[('u', 'r', 'i')]))
