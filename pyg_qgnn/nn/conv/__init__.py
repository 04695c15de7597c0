from pyg_qgnn.nn.conv.bin_edge_conv import BinEdgeConv
from pyg_qgnn.nn.conv.bin_sage_conv import BinSAGEConv
from pyg_qgnn.nn.conv.dynamic_bin_edge_conv import DynamicBinEdgeConv
from pyg_qgnn.nn.conv.dynamic_xor_edge_conv import DynamicXorEdgeConv
from pyg_qgnn.nn.conv.quant_gat_conv import QuantGATConv
from pyg_qgnn.nn.conv.quant_gcn_conv import QuantGCNConv
from pyg_qgnn.nn.conv.quant_gin_conv import QuantGINConv
from pyg_qgnn.nn.conv.quant_lg_conv import QuantLGConv
from pyg_qgnn.nn.conv.quant_sage_conv import QuantSAGEConv
from pyg_qgnn.nn.conv.xor_edge_conv import XorEdgeConv

__all__ = [
    'QuantGCNConv',
    'QuantGINConv',
    'QuantSAGEConv',
    'QuantGATConv',
    'QuantLGConv',
    'BinEdgeConv',
    'BinSAGEConv',
    'XorEdgeConv',
    'DynamicBinEdgeConv',
    'DynamicXorEdgeConv',
]
