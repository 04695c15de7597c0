r"""pyg_qgnn: quantized, binary and pruned GNN layers for PyTorch Geometric."""
from pyg_qgnn import deploy, nn, quantizers, transforms
from pyg_qgnn import distill
from pyg_qgnn import profile, prune
from pyg_qgnn.nn import (
    BinaryDGCNN,
    BinEdgeConv,
    BinLinear,
    DynamicBinEdgeConv,
    DynamicXorEdgeConv,
    QuantGATConv,
    QuantGCNConv,
    QuantGINConv,
    QuantLGConv,
    QuantLinear,
    QuantSAGEConv,
    XorEdgeConv,
)
from pyg_qgnn.quantize import (
    A2Q,
    QAT,
    DegreeQuant,
    QuantScheme,
    calibrate,
    quantize_model,
    register_quantized_layer,
    supported_layers,
)
from pyg_qgnn.quantizers import (
    IntegerQuantizer,
    SignQuantizer,
    disable_fake_quant,
    enable_fake_quant,
    freeze_observer,
    set_binarization_stage,
    unfreeze_observer,
)
from pyg_qgnn.report import quantization_report

__version__ = '0.1.0'

__all__ = [
    'quantize_model',
    'QuantScheme',
    'QAT',
    'DegreeQuant',
    'A2Q',
    'quantization_report',
    'calibrate',
    'register_quantized_layer',
    'supported_layers',
    'QuantLinear',
    'QuantGCNConv',
    'QuantGINConv',
    'QuantSAGEConv',
    'QuantGATConv',
    'QuantLGConv',
    'IntegerQuantizer',
    'SignQuantizer',
    'set_binarization_stage',
    'BinLinear',
    'BinEdgeConv',
    'XorEdgeConv',
    'DynamicBinEdgeConv',
    'DynamicXorEdgeConv',
    'BinaryDGCNN',
    'distill',
    'enable_fake_quant',
    'disable_fake_quant',
    'freeze_observer',
    'unfreeze_observer',
    'deploy',
    'nn',
    'quantizers',
    'transforms',
    'prune',
    'profile',
    '__version__',
]
