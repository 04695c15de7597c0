r"""Graph transforms (:class:`torch_geometric.transforms.BaseTransform`)."""
from pyg_qgnn.transforms.degree_quant_mask import (
    DegreeQuantMask,
    attach_protection_probability,
    edge_targets,
    graph_protection_probability,
    in_degree,
)

__all__ = [
    'DegreeQuantMask',
    'attach_protection_probability',
    'edge_targets',
    'graph_protection_probability',
    'in_degree',
]
