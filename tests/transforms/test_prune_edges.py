"""Tests of PruneEdges and prune_edges_mask (LightGNN edge pruning)."""
import warnings

import pytest
import torch
import torch_geometric.transforms as T
from torch.utils.data import IterDataPipe
from torch.utils.data.datapipes.iter import IterableWrapper
from torch_geometric.data import Data, HeteroData
from torch_geometric.utils import is_undirected

from pyg_qgnn.datasets.recsys import interaction_graph
from pyg_qgnn.transforms import LightGNNAdjacency, PruneEdges, prune_edges_mask


def directed_graph():
    # Nodes 0..4, node 4 isolated; e3 duplicates e0; e2 and e5 tie.
    #   e0 (0,1) 0.5   e1 (1,2) -3.0   e2 (2,0) 2.0
    #   e3 (0,1) 1.0   e4 (2,3) -0.1   e5 (3,0) 2.0
    # |w| best first (ties: earlier edge first): e1, e2, e5, e3, e0, e4.
    return Data(edge_index=torch.tensor([[0, 1, 2, 0, 2, 3],
                                         [1, 2, 0, 1, 3, 0]]),
                edge_weight=torch.tensor([0.5, -3.0, 2.0, 1.0, -0.1, 2.0]),
                edge_attr=torch.arange(12.).view(6, 2),
                edge_time=torch.tensor([10, 11, 12, 13, 14, 15]),
                x=torch.randn(5, 4), num_nodes=5)


def kept(data, ratio, **kwargs):
    return PruneEdges(ratio, undirected=kwargs.pop('undirected', False),
                      **kwargs)(data).edge_time.sub(10).tolist()


def test_hand_worked_directed_ratios():
    data = directed_graph()
    assert kept(data, 0.0) == [0, 1, 2, 3, 4, 5]
    assert kept(data, 0.4) == [1, 2, 3, 5]  # round(2.4) = 2: e4, e0
    assert kept(data, 0.5) == [1, 2, 5]  # round(3.0) = 3: e4, e0, e3
    assert kept(data, 0.7) == [1, 2]  # round(4.2) = 4: tie, later e5 goes
    # |score| is used: -3.0 (e1) is the most important edge.
    assert kept(data, 0.8) == [1]


def test_every_edge_attribute_is_carried():
    data = directed_graph()
    out = PruneEdges(0.5, undirected=False)(data)
    keep = torch.tensor([1, 2, 5])
    assert torch.equal(out.edge_index, data.edge_index[:, keep])
    assert torch.equal(out.edge_attr, data.edge_attr[keep])
    assert torch.equal(out.edge_weight, data.edge_weight[keep])
    assert torch.equal(out.x, data.x) and out.num_nodes == 5
    assert data.edge_index.size(1) == 6  # the input is left alone


def test_min_degree_hand_worked_and_warning():
    data = directed_graph()
    # Each edge counts at its source and target. min_degree=1 protects the
    # best edge of each node: node 0 {e0, e2, e3, e5} -> e2 (tie with e5,
    # earlier wins), node 1 {e0, e1, e3} -> e1, node 2 {e1, e2, e4} -> e1,
    # node 3 {e4, e5} -> e5. Candidates e0, e3, e4.
    assert kept(data, 0.5, min_degree=1) == [1, 2, 5]
    with pytest.warns(UserWarning, match=r'dropping 3 instead of 4 \(1 '
                      r'fewer\)'):
        assert kept(data, 0.7, min_degree=1) == [1, 2, 5]
    # min_degree=2: node 0 -> e2, e5; node 1 -> e1, e3; node 2 -> e1, e2;
    # node 3 -> e5, e4. Only e0 is a candidate.
    with pytest.warns(UserWarning, match=r'protects 5 of 6 edges.*\(2 '
                      r'fewer\)'):
        assert kept(data, 0.5, min_degree=2) == [1, 2, 3, 4, 5]


def undirected_graph():
    # Nodes 0..4 (4 isolated). Pairs, with the k-th copy of (i, j) matched
    # to the k-th copy of (j, i), scored by the mean |w|:
    #   A = idx 0, 2  (0-1) (1 + 3) / 2 = 2.0   first copies
    #   B = idx 1, 4  (1-2) (.5 + .5) / 2 = 0.5
    #   C = idx 3, 5  (0-2) (4 + 4) / 2 = 4.0
    #   D = idx 6, 8  (2-3) (1 + 0) / 2 = 0.5   ties B, comes later
    #   E = idx 7, 9  (0-1) .2                  second copies (duplicate)
    # Best first: C, A, B, D, E.
    return Data(edge_index=torch.tensor([[0, 1, 1, 0, 2, 2, 2, 0, 3, 1],
                                         [1, 2, 0, 2, 1, 0, 3, 1, 2, 0]]),
                edge_weight=torch.tensor([1.0, -0.5, 3.0, 4.0, 0.5, -4.0,
                                          1.0, 0.2, 0.0, 0.2]),
                edge_time=torch.arange(10, 20), num_nodes=5)


def test_hand_worked_undirected_pairs():
    data = undirected_graph()
    both = dict(undirected=True)
    assert kept(data, 0.4, **both) == [0, 1, 2, 3, 4, 5]  # E, D
    assert kept(data, 0.5, **both) == [0, 1, 2, 3, 4, 5]  # round(2.5) = 2
    assert kept(data, 0.6, **both) == [0, 2, 3, 5]  # E, D, B
    # Auto-detected: the same graph is undirected.
    out = PruneEdges(0.6)(data)
    assert out.edge_time.sub(10).tolist() == [0, 2, 3, 5]
    # As single edges: |w| = 1 .5 3 4 .5 4 1 .2 0 .2; drop 4: 8, 9, 7, 4.
    assert kept(data, 0.4) == [0, 1, 2, 3, 5, 6]
    # min_degree=1 over pairs: node 0 {A, C, E} -> C, node 1 {A, B, E} ->
    # A, node 2 {B, C, D} -> C, node 3 {D} -> D: only B, E are candidates.
    with pytest.warns(UserWarning, match='undirected edges'):
        assert kept(data, 0.6, min_degree=1, **both) == [0, 2, 3, 5, 6, 8]


def random_interactions(num_users=30, num_items=40, num=300, seed=0):
    gen = torch.Generator().manual_seed(seed)
    pairs = torch.stack([torch.randint(num_users, (num, ), generator=gen),
                         torch.randint(num_items, (num, ), generator=gen)])
    edge_index = interaction_graph(pairs, num_users)
    weight = torch.randn(num, generator=gen).repeat(2)
    return Data(edge_index=edge_index, edge_weight=weight,
                num_nodes=num_users + num_items)


@pytest.mark.parametrize('ratio', [0.0, 0.1, 0.25, 1 / 3, 0.5, 0.9, 0.99])
def test_exact_ratios(ratio):
    data = random_interactions()
    directed = PruneEdges(ratio, undirected=False)(data)
    assert data.num_edges - directed.num_edges == round(ratio * 600)
    pairs = PruneEdges(ratio)(data)  # detected as undirected
    assert data.num_edges - pairs.num_edges == 2 * round(ratio * 300)
    assert is_undirected(pairs.edge_index)
    mask = prune_edges_mask(torch.randn(600), ratio, data.edge_index, 70)
    assert int((~mask).sum()) == round(ratio * 600)


def degrees(edge_index, num_nodes):
    return (torch.bincount(edge_index[0], minlength=num_nodes) +
            torch.bincount(edge_index[1], minlength=num_nodes))


@pytest.mark.parametrize('min_degree', [1, 2, 3])
def test_min_degree_is_respected(min_degree):
    gen = torch.Generator().manual_seed(min_degree)
    edge_index = torch.randint(40, (2, 200), generator=gen)
    edge_index = edge_index[:, edge_index[0] != edge_index[1]]
    before = degrees(edge_index, 40)
    data = Data(edge_index=edge_index, num_nodes=40,
                edge_weight=torch.randn(edge_index.size(1), generator=gen))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        out = PruneEdges(0.9, min_degree=min_degree, undirected=False)(data)
    after = degrees(out.edge_index, 40)
    needy = before >= min_degree
    assert (after[needy] >= min_degree).all()
    assert (after[~needy] == before[~needy]).all()


def test_random_scores_seeded():
    data = random_interactions()
    first = PruneEdges(0.5, score='random', seed=1)(data)
    again = PruneEdges(0.5, score='random', seed=1)(data)
    other = PruneEdges(0.5, score='random', seed=2)(data)
    assert torch.equal(first.edge_index, again.edge_index)
    assert not torch.equal(first.edge_index, other.edge_index)
    transform = PruneEdges(0.5, score='random', seed=1)
    assert not torch.equal(transform(data).edge_index,
                           transform(data).edge_index)  # new draws
    torch.manual_seed(0)
    unseeded = PruneEdges(0.5, score='random')(data)
    assert data.num_edges - unseeded.num_edges == 300
    no_weight = Data(edge_index=data.edge_index, num_nodes=70)
    assert PruneEdges(0.5, score='random')(no_weight).num_edges == 300


def test_callable_score():
    data = directed_graph()
    # Scores by the second column of edge_attr: 1, 3, 5, 7, 9, 11.
    out = PruneEdges(0.5, score=lambda store: store.edge_attr[:, 1],
                     undirected=False)(data)
    assert out.edge_time.sub(10).tolist() == [3, 4, 5]
    by_time = PruneEdges(0.5, score=lambda store: -store.edge_time,
                         undirected=False)(data)  # long scores, |.| used
    assert by_time.edge_time.sub(10).tolist() == [3, 4, 5]
    with pytest.raises(ValueError, match="'score' must hold one value"):
        PruneEdges(0.5, score=lambda store: torch.ones(2))(data)


def bipartite():
    # Users 0..1, items 0..2: e0 (u0,i0) 1, e1 (u0,i1) 2, e2 (u1,i0) 3,
    # e3 (u1,i2) .5. Users and items are distinct nodes: min_degree=1
    # protects u0 -> e1, u1 -> e2, i0 -> e2, i1 -> e1, i2 -> e3.
    data = HeteroData()
    data['user'].num_nodes = 2
    data['item'].num_nodes = 3
    store = data['user', 'rates', 'item']
    store.edge_index = torch.tensor([[0, 0, 1, 1], [0, 1, 0, 2]])
    store.edge_weight = torch.tensor([1.0, 2.0, 3.0, 0.5])
    store.edge_attr = torch.arange(8.).view(4, 2)
    return data


def test_hetero_bipartite():
    data = bipartite()
    out = PruneEdges(0.5)(data)  # drop e3 (.5), e0 (1)
    assert out['rates'].edge_index.tolist() == [[0, 1], [1, 0]]
    assert out['rates'].edge_attr.tolist() == [[2.0, 3.0], [4.0, 5.0]]
    with pytest.warns(UserWarning, match='1 fewer'):
        out = PruneEdges(0.5, min_degree=1)(data)
    assert out['rates'].edge_weight.tolist() == [2.0, 3.0, 0.5]
    undirected = T.ToUndirected()(bipartite())
    out = PruneEdges(0.5, edge_types=[('user', 'rates', 'item')])(undirected)
    assert out['rates'].num_edges == 2 and out['rev_rates'].num_edges == 4
    with pytest.raises(ValueError, match='bipartite'):
        PruneEdges(0.5, undirected=True)(data)
    with pytest.raises(ValueError, match="'undirected' must be False"):
        prune_edges_mask(torch.ones(4), 0.5, data['rates'].edge_index,
                         (2, 3), undirected=True)
    mask = prune_edges_mask(torch.tensor([1.0, 2.0, 3.0, 0.5]), 0.5,
                            data['rates'].edge_index, (2, 3), min_degree=0)
    assert mask.tolist() == [False, True, True, False]


def test_validation():
    data = directed_graph()
    for ratio in (1.0, -0.1, 1.5, True, '0.5'):
        with pytest.raises(ValueError, match=r"'ratio' must be in \[0, 1\)"):
            PruneEdges(ratio)
    with pytest.raises(ValueError, match=r"'ratio' must be in \[0, 1\) "
                       r"\(got 1.5\)"):
        prune_edges_mask(torch.ones(6), 1.5, data.edge_index, 5)
    for value in (-1, 1.5):
        with pytest.raises(ValueError, match="'min_degree' must be an int "
                           ">= 0"):
            PruneEdges(0.5, min_degree=value)
    with pytest.raises(ValueError, match="'score' must be 'weight', 'random' "
                       "or a callable"):
        PruneEdges(0.5, score='magnitude')
    with pytest.raises(ValueError, match="'undirected'"):
        PruneEdges(0.5, undirected='yes')
    with pytest.raises(ValueError, match="'seed'"):
        PruneEdges(0.5, seed=-1)
    with pytest.raises(ValueError, match="'w' \\('score_attr'\\)"):
        PruneEdges(0.5, score_attr='w')(data)
    bad = directed_graph()
    bad.edge_weight = torch.ones(5)
    with pytest.raises(ValueError, match="'edge_weight' must hold one value"):
        PruneEdges(0.5)(bad)
    bad.edge_weight = torch.tensor([1.0, float('nan'), 1, 1, 1, 1])
    with pytest.raises(ValueError, match="'edge_weight' must be finite"):
        PruneEdges(0.5)(bad)


def test_compose_datapipe_and_repr():
    transform = T.Compose([PruneEdges(0.5), LightGNNAdjacency()])
    out = transform(undirected_graph())
    assert out.num_edges == 6 and torch.isfinite(out.edge_weight).all()
    assert 'prune_edges' in IterDataPipe.functions
    piped = list(IterableWrapper([directed_graph()]).prune_edges(
        0.5, undirected=False))
    assert piped[0].edge_time.sub(10).tolist() == [1, 2, 5]
    assert repr(PruneEdges(0.3)) == (
        "PruneEdges(ratio=0.3, score='weight', min_degree=0, "
        "score_attr='edge_weight', undirected=None, seed=None)")
    assert "score='random'" in repr(PruneEdges(0.3, score='random', seed=1))
