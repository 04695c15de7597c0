import torch
from torch_geometric.data import Data

from pyg_qgnn.datasets import LoadedGraph, contextual_sbm


def two_community_graph(n=40, features=8, seed=0):
    r"""A small two-class graph with public-split-style masks."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, features, generator=gen) + 2.0 * y.view(-1, 1).float()
    same = y.view(-1, 1) == y.view(1, -1)
    edge_index = (same & (torch.rand(n, n, generator=gen) < 0.2)).nonzero().t()
    idx = torch.randperm(n, generator=gen)
    masks = [torch.zeros(n, dtype=torch.bool) for _ in range(3)]
    masks[0][idx[:n // 4]] = True
    masks[1][idx[n // 4:n // 2]] = True
    masks[2][idx[n // 2:]] = True
    return Data(x=x, edge_index=edge_index, y=y, train_mask=masks[0],
                val_mask=masks[1], test_mask=masks[2])


def random_graph(nodes=30, edges=90, features=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(nodes, features, generator=gen),
            torch.randint(nodes, (2, edges), generator=gen))


def graph():
    r"""A small synthetic stand-in for Cora, as :func:`load_planetoid`
    returns one."""
    data = contextual_sbm(200, 2, 32, train_per_class=10, num_val=50,
                          num_test=100)
    return LoadedGraph(data, 2, 'synthetic', 'synthetic split', True, 'Cora')
