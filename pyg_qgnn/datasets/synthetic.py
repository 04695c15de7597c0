r"""Synthetic graphs for offline defaults and tests."""
import torch
from torch_geometric.data import Data
from torch_geometric.utils import stochastic_blockmodel_graph


def contextual_sbm(num_nodes: int = 2708, num_classes: int = 7,
                   num_features: int = 256, avg_degree: float = 4.0,
                   homophily: float = 0.8, words_per_node: float = 18.0,
                   topic_boost: float = 3.0,
                   train_per_class: int = 20, num_val: int = 500,
                   num_test: int = 1000, seed: int = 0) -> Data:
    r"""A contextual stochastic block model (`Deshpande et al., 2018
    <https://arxiv.org/abs/1807.09596>`_): nodes of :obj:`num_classes`
    equal blocks, an edge inside a block with probability
    :math:`p_{in}` and across with :math:`p_{out}`, chosen so that the
    expected degree is :obj:`avg_degree` and a fraction :obj:`homophily` of
    edges stays inside blocks. Features are binary bags of words like
    Cora's: about :obj:`words_per_node` words per node, each class drawing
    the words of its own topic (a random :math:`1/C` of the vocabulary)
    :obj:`topic_boost` times more often. Masks follow the
    Planetoid split (:obj:`train_per_class` per class, then validation and
    test nodes).

    Returns:
        :class:`torch_geometric.data.Data` with :obj:`x`, :obj:`edge_index`,
        :obj:`y`, :obj:`train_mask`, :obj:`val_mask`, :obj:`test_mask`.
    """
    if num_nodes < num_classes * train_per_class + num_val + num_test:
        raise ValueError(f"'num_nodes' ({num_nodes}) is too small for "
                         f"{train_per_class} training nodes per class, "
                         f"{num_val} validation and {num_test} test nodes")
    gen = torch.Generator().manual_seed(seed)
    block = num_nodes // num_classes
    sizes = [block] * num_classes
    sizes[-1] += num_nodes - block * num_classes
    # Expected degree ≈ block * p_in + (n - block) * p_out.
    p_in = homophily * avg_degree / block
    p_out = (1 - homophily) * avg_degree / (num_nodes - block)
    probs = torch.full((num_classes, num_classes), p_out)
    probs.fill_diagonal_(p_in)
    torch.manual_seed(seed)  # stochastic_blockmodel_graph uses global RNG
    edge_index = stochastic_blockmodel_graph(sizes, probs, directed=False)
    y = torch.cat([torch.full((n, ), c) for c, n in enumerate(sizes)])
    topic = torch.randint(num_classes, (num_features, ), generator=gen)
    rate = 1.0 + topic_boost * (topic.unsqueeze(0) == torch.arange(
        num_classes).unsqueeze(1)).float()  # (classes, features)
    rate = rate * words_per_node / rate.sum(dim=1, keepdim=True)
    x = torch.bernoulli(rate[y].clamp(max=1.0), generator=gen)

    order = torch.randperm(num_nodes, generator=gen)
    train_mask = torch.zeros(num_nodes, dtype=torch.bool)
    for c in range(num_classes):
        train_mask[order[y[order] == c][:train_per_class]] = True
    rest = order[~train_mask[order]]
    val_mask = torch.zeros(num_nodes, dtype=torch.bool)
    val_mask[rest[:num_val]] = True
    test_mask = torch.zeros(num_nodes, dtype=torch.bool)
    test_mask[rest[num_val:num_val + num_test]] = True
    return Data(x=x, edge_index=edge_index, y=y, train_mask=train_mask,
                val_mask=val_mask, test_mask=test_mask)
