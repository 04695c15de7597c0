from pyg_qgnn.nn.conv.quant_gcn_conv import QuantGCNConv

__all__ = ['QuantGCNConv']
