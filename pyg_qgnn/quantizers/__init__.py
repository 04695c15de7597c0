r"""Quantizers :math:`Q(\cdot)`: how floats become integer or binary codes."""
from pyg_qgnn.quantizers.a2q import A2QQuantizer, a2q_fake_quantize
from pyg_qgnn.quantizers.base import (
    Quantizer,
    disable_fake_quant,
    enable_fake_quant,
    freeze_observer,
    unfreeze_observer,
)
from pyg_qgnn.quantizers.binary import (
    LearnedRescale,
    SignQuantizer,
    balance,
    center_and_clip_,
    clip_latent_weights_,
    latent_binary_weights,
    pack_signs,
    register_latent_weight_clipping,
    rescale,
    set_binarization_stage,
    unpack_signs,
)
from pyg_qgnn.quantizers.degree_quant import (
    DegreeQuantizer,
    protection_probability,
)
from pyg_qgnn.quantizers.functional import (
    fake_quantize,
    lsq_fake_quantize,
    quant_range,
    ste_sign,
)
from pyg_qgnn.quantizers.node_aware import NodeAwareQuantizer
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
    'DegreeQuantizer',
    'A2QQuantizer',
    'NodeAwareQuantizer',
    'SignQuantizer',
    'LearnedRescale',
    'rescale',
    'balance',
    'center_and_clip_',
    'clip_latent_weights_',
    'register_latent_weight_clipping',
    'latent_binary_weights',
    'set_binarization_stage',
    'pack_signs',
    'unpack_signs',
    'protection_probability',
    'a2q_fake_quantize',
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
