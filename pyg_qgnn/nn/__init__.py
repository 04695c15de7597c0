from pyg_qgnn.nn.quant_layer import QUANT_POINTS, QuantLayer
from pyg_qgnn.nn.dense import BinLinear, QuantLinear
from pyg_qgnn.nn.conv import (
    BinEdgeConv,
    BinSAGEConv,
    DynamicBinEdgeConv,
    DynamicXorEdgeConv,
    QuantGATConv,
    QuantGCNConv,
    QuantGINConv,
    QuantLGConv,
    QuantSAGEConv,
    XorEdgeConv,
)
from pyg_qgnn.nn import models
from pyg_qgnn.nn.models import DGCNN, BinaryDGCNN, BinGraphSAGE

__all__ = ['QUANT_POINTS', 'QuantLayer', 'QuantLinear', 'QuantGCNConv',
           'QuantGINConv', 'QuantSAGEConv', 'QuantGATConv', 'QuantLGConv',
           'BinLinear', 'BinEdgeConv', 'XorEdgeConv', 'DynamicBinEdgeConv',
           'DynamicXorEdgeConv', 'DGCNN', 'BinaryDGCNN', 'BinSAGEConv',
           'BinGraphSAGE', 'models']
