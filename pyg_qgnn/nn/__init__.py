from pyg_qgnn.nn.quant_layer import QUANT_POINTS, QuantLayer
from pyg_qgnn.nn.dense import QuantLinear
from pyg_qgnn.nn.conv import QuantGCNConv

__all__ = ['QUANT_POINTS', 'QuantLayer', 'QuantLinear', 'QuantGCNConv']
