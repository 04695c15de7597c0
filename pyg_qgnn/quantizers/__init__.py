r"""Quantizers :math:`Q(\cdot)`: how floats become integer or binary codes."""
from pyg_qgnn.quantizers.base import (
    Quantizer,
    disable_fake_quant,
    enable_fake_quant,
    freeze_observer,
    unfreeze_observer,
)
from pyg_qgnn.quantizers.functional import (
    fake_quantize,
    lsq_fake_quantize,
    quant_range,
    ste_sign,
)
from pyg_qgnn.quantizers.observers import (
    MinMaxObserver,
    MomentumObserver,
    Observer,
    PercentileObserver,
    make_observer,
)
from pyg_qgnn.quantizers.packing import container_bits, pack_bits, unpack_bits
from pyg_qgnn.quantizers.uniform import IntegerQuantizer

__all__ = [
    'Quantizer',
    'IntegerQuantizer',
    'Observer',
    'MinMaxObserver',
    'MomentumObserver',
    'PercentileObserver',
    'make_observer',
    'fake_quantize',
    'lsq_fake_quantize',
    'ste_sign',
    'quant_range',
    'pack_bits',
    'unpack_bits',
    'container_bits',
    'enable_fake_quant',
    'disable_fake_quant',
    'freeze_observer',
    'unfreeze_observer',
]
