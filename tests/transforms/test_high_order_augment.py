"""Tests of HighOrderAugment (LightGNN Eq. 7)."""
import pytest
import torch
import torch_geometric.transforms as T
from torch.utils.data import IterDataPipe
from torch.utils.data.datapipes.iter import IterableWrapper
from torch_geometric.data import Data, HeteroData

from pyg_qgnn.datasets.recsys import interaction_graph
from pyg_qgnn.transforms import HighOrderAugment, LightGNNAdjacency

# Users u0..u4 (u4 isolated) are nodes 0..4, items i0..i4 (i4 isolated)
# nodes 5..9. (u1, i1) appears twice.
#   u0: i0          u1: i0 i1 i2     u2: i0 i1     u3: i2 i3
# 3-hop walk counts R R^T R (the (A+I)^3 entry 3R + R R^T R of an unlinked
# pair), from the co-interaction counts R R^T:
#   u0: R[u0] + R[u1] + R[u2]            -> new i1: 2, i2: 1
#   u1: R[u0] + 3R[u1] + 2R[u2] + R[u3]  -> new i3: 1
#   u2: R[u0] + 2R[u1] + 2R[u2]          -> new i2: 2
#   u3: R[u1] + 2R[u3]                   -> new i0: 1, i1: 1 (a tie)
PAIRS = torch.tensor([[0, 1, 1, 1, 2, 2, 3, 3, 1],
                      [0, 0, 1, 2, 0, 1, 2, 3, 1]])
NEW = [(0, 6), (0, 7), (1, 8), (2, 7), (3, 5), (3, 6)]
# max_per_node=1: u0 keeps i1 (2 > 1), u3 keeps i0 (tie: smaller id).
NEW_CAPPED = [(0, 6), (1, 8), (2, 7), (3, 5)]


def recsys_graph():
    edge_index = interaction_graph(PAIRS, 5)
    num = edge_index.size(1)  # 18
    return Data(edge_index=edge_index, num_nodes=10, num_users=5,
                num_items=5, x=torch.randn(10, 2),
                edge_weight=torch.rand(num), edge_attr=torch.rand(num, 2),
                edge_time=torch.arange(num), edge_flag=torch.ones(num).bool())


def both_directions(pairs):
    return sorted(pairs + [(j, i) for i, j in pairs])


def new_edges(out, num_old=18):
    return [tuple(e) for e in out.edge_index[:, num_old:].t().tolist()]


def test_hand_worked_recsys_graph():
    data = recsys_graph()
    out = HighOrderAugment()(data.clone())
    assert new_edges(out) == both_directions(NEW)
    assert torch.equal(out.edge_index[:, :18], data.edge_index)
    assert out.edge_augmented.tolist() == [False] * 18 + [True] * 12
    capped = HighOrderAugment(max_per_node=1, chunk_size=2)(data.clone())
    assert new_edges(capped) == both_directions(NEW_CAPPED)
    assert new_edges(HighOrderAugment(max_per_node=2)(data.clone())) == \
        both_directions(NEW)
    for hops in (1, 2):  # user-item paths have odd length
        same = HighOrderAugment(hops=hops)(data.clone())
        assert torch.equal(same.edge_index, data.edge_index)
        assert not same.edge_augmented.any()


def test_new_edges_get_filled_attributes():
    data = recsys_graph()
    out = HighOrderAugment(max_per_node=1)(data.clone())
    assert out.num_edges == 26
    assert torch.equal(out.edge_weight[:18], data.edge_weight)
    assert out.edge_weight[18:].eq(0).all()
    assert out.edge_attr.shape == (26, 2) and out.edge_attr[18:].eq(0).all()
    assert out.edge_time.dtype == torch.long and out.edge_time[18:].eq(
        0).all()
    assert out.edge_flag.dtype == torch.bool and not out.edge_flag[18:].any()
    assert torch.equal(out.x, data.x)
    ones = HighOrderAugment(max_per_node=1, fill_value=1,
                            augmented_attr='added')(data.clone())
    assert ones.edge_weight[18:].eq(1).all() and ones.edge_flag.all()
    assert ones.added.sum() == 8 and 'edge_augmented' not in ones
    # Applied twice: earlier flags are kept, nothing already linked added.
    twice = HighOrderAugment(max_per_node=1)(out.clone())
    assert twice.edge_augmented[:26].tolist() == out.edge_augmented.tolist()
    assert len(set(map(tuple, twice.edge_index.t().tolist()))) == \
        twice.num_edges - 2  # only the input's duplicate (u1, i1) repeats
    # The normalized adjacency of the augmented graph has no NaN.
    assert torch.isfinite(LightGNNAdjacency()(out).edge_weight).all()


def dense_reference(edge_index, num_nodes, hops, rows, cols, cap=None):
    adj = torch.zeros(num_nodes, num_nodes, dtype=torch.float64)
    adj[edge_index[0], edge_index[1]] = 1
    adj[edge_index[1], edge_index[0]] = 1
    adj.fill_diagonal_(0)
    walks = torch.linalg.matrix_power(adj + torch.eye(num_nodes,
                                                      dtype=adj.dtype), hops)
    chosen = []
    for r in rows:
        found = [(-walks[r, c].item(), c) for c in cols
                 if c != r and walks[r, c] > 0 and adj[r, c] == 0]
        chosen += [(r, c) for _, c in sorted(found)[:cap]]
    return sorted(set(chosen + [(c, r) for r, c in chosen]))


@pytest.mark.parametrize('hops', [1, 2, 3, 4, 5])
@pytest.mark.parametrize('cap', [None, 3])
def test_matches_dense_matrix_power(hops, cap):
    gen = torch.Generator().manual_seed(hops)
    num_users, num_items = 12, 15
    pairs = torch.stack([torch.randint(num_users, (25, ), generator=gen),
                         torch.randint(num_items, (25, ), generator=gen)])
    edge_index = interaction_graph(pairs, num_users)
    data = Data(edge_index=edge_index, num_nodes=27, num_users=num_users)
    out = HighOrderAugment(hops=hops, max_per_node=cap,
                           chunk_size=5)(data.clone())
    expected = dense_reference(edge_index, 27, hops, range(num_users),
                               range(num_users, 27), cap)
    assert new_edges(out, edge_index.size(1)) == expected
    # A generic graph (no num_users): all pairs within `hops` hops.
    graph = torch.randint(14, (2, 18), generator=gen)
    out = HighOrderAugment(hops=hops, max_per_node=cap, chunk_size=4)(
        Data(edge_index=graph, num_nodes=16))
    assert new_edges(out, 18) == dense_reference(graph, 16, hops, range(16),
                                                 range(16), cap)


def hetero_graph(reverse=True):
    data = HeteroData()
    data['user'].num_nodes = 5
    data['item'].num_nodes = 5
    store = data['user', 'rates', 'item']
    store.edge_index = PAIRS.clone()
    store.edge_weight = torch.rand(9)
    return T.ToUndirected()(data) if reverse else data


def test_hetero_bipartite():
    shift = [(u, i - 5) for u, i in NEW_CAPPED]
    out = HighOrderAugment(max_per_node=1)(hetero_graph())
    fwd, rev = out['rates'], out['rev_rates']
    assert [tuple(e) for e in fwd.edge_index[:, 9:].t().tolist()] == shift
    assert [tuple(e) for e in rev.edge_index[:, 9:].t().tolist()] == \
        sorted((i, u) for u, i in shift)
    assert fwd.edge_augmented.sum() == 4 and rev.edge_augmented.sum() == 4
    assert fwd.edge_weight[9:].eq(0).all() and rev.edge_weight.size(0) == 13
    alone = HighOrderAugment()(hetero_graph(reverse=False))
    assert [tuple(e) for e in alone['rates'].edge_index[:, 9:].t().tolist()] \
        == [(u, i - 5) for u, i in NEW]
    only = HighOrderAugment(edge_type=('user', 'rates', 'item'))(
        hetero_graph())
    assert only['rev_rates'].num_edges == 15  # found as the reverse type
    third = hetero_graph()
    third['user', 'follows', 'user'].edge_index = torch.tensor([[0], [1]])
    with pytest.raises(ValueError, match="'edge_type' must be given"):
        HighOrderAugment()(third)
    with pytest.raises(ValueError, match="'rev_edge_type'.*not an edge type"):
        HighOrderAugment(rev_edge_type=('item', 'x', 'user'))(hetero_graph())


def test_validation():
    for name, kwargs in [('hops', dict(hops=0)), ('hops', dict(hops=1.5)),
                         ('max_per_node', dict(max_per_node=0)),
                         ('chunk_size', dict(chunk_size=0)),
                         ('edge_type', dict(edge_type=('user', 'item'))),
                         ('fill_value', dict(fill_value='zero')),
                         ('augmented_attr', dict(augmented_attr=''))]:
        with pytest.raises(ValueError, match=f"'{name}' must"):
            HighOrderAugment(**kwargs)
    with pytest.raises(ValueError, match=r"'hops' must be an int >= 1 "
                       r"\(got 0\)"):
        HighOrderAugment(hops=0)
    with pytest.raises(ValueError, match='HeteroData only'):
        HighOrderAugment(edge_type=('user', 'rates', 'item'))(recsys_graph())
    bad = recsys_graph()
    bad.num_users = 11
    with pytest.raises(ValueError, match="'data.num_users'"):
        HighOrderAugment()(bad)


def test_medium_graph_with_cap_is_sparse_and_fast():
    gen = torch.Generator().manual_seed(0)
    pairs = torch.stack([torch.randint(2000, (8000, ), generator=gen),
                         torch.randint(3000, (8000, ), generator=gen)])
    data = Data(edge_index=interaction_graph(pairs, 2000), num_nodes=5000,
                num_users=2000)
    out = HighOrderAugment(max_per_node=8, chunk_size=256)(data)
    new = out.edge_index[:, out.edge_augmented]
    users = new[0][new[0] < 2000]
    assert torch.bincount(users).max() <= 8
    assert len(set(map(tuple, out.edge_index.t().tolist()))) == len(
        set(map(tuple, data.edge_index.t().tolist()))) + new.size(1)


def test_compose_datapipe_and_repr():
    out = T.Compose([HighOrderAugment(max_per_node=1),
                     LightGNNAdjacency()])(recsys_graph())
    assert out.num_edges == 26
    assert 'high_order_augment' in IterDataPipe.functions
    piped = list(IterableWrapper([recsys_graph()]).high_order_augment())
    assert new_edges(piped[0]) == both_directions(NEW)
    assert repr(HighOrderAugment()) == (
        "HighOrderAugment(hops=3, max_per_node=None, fill_value=0.0, "
        "augmented_attr='edge_augmented', chunk_size=2048)")
