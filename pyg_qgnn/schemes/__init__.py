r"""Quantization schemes: which quantizer stands at each quantization point
of a layer. Each plugs into :func:`pyg_qgnn.quantize_model`."""
from pyg_qgnn.schemes.a2q import A2Q
from pyg_qgnn.schemes.base import (
    QUANTIZED_LAYERS,
    QuantScheme,
    register_quantized_layer,
    supported_layers,
)
from pyg_qgnn.schemes.binary import (
    BINARY_LAYERS,
    Binary,
    register_binary_layer,
)
from pyg_qgnn.schemes.degree_quant import DegreeQuant
from pyg_qgnn.schemes.qat import QAT

__all__ = [
    'QuantScheme',
    'QAT',
    'DegreeQuant',
    'A2Q',
    'Binary',
    'BINARY_LAYERS',
    'register_binary_layer',
    'QUANTIZED_LAYERS',
    'register_quantized_layer',
    'supported_layers',
]
