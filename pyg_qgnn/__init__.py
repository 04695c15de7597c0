r"""pyg_qgnn: quantized, binary and pruned GNN layers for PyTorch Geometric."""
from pyg_qgnn import deploy, nn, quantizers
from pyg_qgnn.nn import QuantGCNConv, QuantLinear
from pyg_qgnn.quantize import (
    QAT,
    QuantScheme,
    calibrate,
    quantize_model,
    register_quantized_layer,
    supported_layers,
)
from pyg_qgnn.quantizers import (
    IntegerQuantizer,
    disable_fake_quant,
    enable_fake_quant,
    freeze_observer,
    unfreeze_observer,
)

__version__ = '0.1.0'

__all__ = [
    'quantize_model',
    'QuantScheme',
    'QAT',
    'calibrate',
    'register_quantized_layer',
    'supported_layers',
    'QuantLinear',
    'QuantGCNConv',
    'IntegerQuantizer',
    'enable_fake_quant',
    'disable_fake_quant',
    'freeze_observer',
    'unfreeze_observer',
    'deploy',
    'nn',
    'quantizers',
    '__version__',
]
