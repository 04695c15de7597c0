from pyg_qgnn.nn.models.dgcnn import DGCNN, BinaryDGCNN

__all__ = ['DGCNN', 'BinaryDGCNN']
from pyg_qgnn.nn.models.gnn_classifiers import (  # noqa: E402
    GraphClassifier,
    node_classifier,
)

__all__ += ['GraphClassifier', 'node_classifier']
from pyg_qgnn.nn.models.gnaq import QuantLightGCN  # noqa: E402

__all__ += ['QuantLightGCN']
from pyg_qgnn.nn.models.bin_graph_sage import BinGraphSAGE  # noqa: E402

__all__ += ['BinGraphSAGE']
from pyg_qgnn.nn.models.lightgnn import LightGNN  # noqa: E402

__all__ += ['LightGNN']
