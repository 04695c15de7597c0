r"""Graph transforms (:class:`torch_geometric.transforms.BaseTransform`)."""
from pyg_qgnn.transforms.degree_quant_mask import (
    DegreeQuantMask,
    attach_protection_probability,
    edge_targets,
    graph_protection_probability,
    in_degree,
)
from pyg_qgnn.transforms.high_order_augment import HighOrderAugment
from pyg_qgnn.transforms.lightgnn_adjacency import LightGNNAdjacency
from pyg_qgnn.transforms.prune_edges import PruneEdges, prune_edges_mask

__all__ = [
    'DegreeQuantMask',
    'HighOrderAugment',
    'LightGNNAdjacency',
    'PruneEdges',
    'attach_protection_probability',
    'edge_targets',
    'graph_protection_probability',
    'in_degree',
    'prune_edges_mask',
]
