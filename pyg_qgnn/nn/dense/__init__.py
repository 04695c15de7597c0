from pyg_qgnn.nn.dense.quant_linear import QuantLinear

__all__ = ['QuantLinear']
