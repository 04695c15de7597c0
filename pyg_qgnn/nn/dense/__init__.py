from pyg_qgnn.nn.dense.bin_linear import BinLinear
from pyg_qgnn.nn.dense.quant_linear import QuantLinear

__all__ = ['QuantLinear', 'BinLinear']
