r"""What a quantization scheme is, and which twin replaces which float
layer (the registry :func:`~pyg_qgnn.quantize_model` consults)."""
from typing import Dict, Optional, Sequence, Type

from torch import nn
from torch_geometric.nn import GATConv, GCNConv, GINConv, SAGEConv
from torch_geometric.nn.dense.linear import Linear as PyGLinear

from pyg_qgnn.nn import (
    QuantGATConv,
    QuantGCNConv,
    QuantGINConv,
    QuantLayer,
    QuantLinear,
    QuantSAGEConv,
)
from pyg_qgnn.quantizers import Quantizer

#: Float layer class -> its quantized twin (exact class match).
QUANTIZED_LAYERS: Dict[Type[nn.Module], Type[QuantLayer]] = {}


def register_quantized_layer(float_cls: Type[nn.Module],
                             quant_cls: Type[QuantLayer]):
    r"""Makes :func:`quantize_model` replace :obj:`float_cls` layers by
    :obj:`quant_cls.from_float(layer, ...)`."""
    if not (isinstance(quant_cls, type) and issubclass(quant_cls, QuantLayer)):
        raise TypeError(f"'quant_cls' must be a QuantLayer subclass "
                        f"(got {quant_cls!r})")
    QUANTIZED_LAYERS[float_cls] = quant_cls


register_quantized_layer(nn.Linear, QuantLinear)
register_quantized_layer(PyGLinear, QuantLinear)
register_quantized_layer(GCNConv, QuantGCNConv)
register_quantized_layer(GINConv, QuantGINConv)
register_quantized_layer(SAGEConv, QuantSAGEConv)
register_quantized_layer(GATConv, QuantGATConv)


def supported_layers() -> list:
    r"""Names of the float layers :func:`quantize_model` can swap."""
    return sorted({cls.__name__ for cls in QUANTIZED_LAYERS})


class QuantScheme:
    r"""Base class of quantization schemes: :meth:`quantizer` returns a fresh
    quantizer for one point of one layer, or :obj:`None` to keep it float."""
    def quantizer(self, point: str, layer: nn.Module) -> Optional[Quantizer]:
        raise TypeError(f"'{type(self).__name__}' must define quantizer()")

    def twin_class(self, float_cls: type) -> Optional[Type[QuantLayer]]:
        r"""The twin class that replaces :obj:`float_cls` layers under this
        scheme (exact class match), or :obj:`None`; by default from
        :obj:`QUANTIZED_LAYERS`."""
        return QUANTIZED_LAYERS.get(float_cls)

    def supported_layers(self) -> list:
        r"""Names of the float layers this scheme swaps."""
        return supported_layers()

    def convert(self, layer: nn.Module) -> QuantLayer:
        r"""The quantized twin of a supported :obj:`layer`."""
        twin_cls = self.twin_class(type(layer))
        quantizers = {point: self.quantizer(point, layer)
                      for point in twin_cls.quant_points}
        return twin_cls.from_float(layer, **quantizers)

    def prepare(self, model: nn.Module):
        r"""Called by :func:`quantize_model` on the quantized model: installs
        what the scheme needs at run time (hooks that hand quantizers the
        graph). Does nothing by default."""


def check_points(points: Sequence[str], allowed: Sequence[str]) -> tuple:
    unknown = set(points) - set(allowed)
    if unknown:
        raise ValueError(f"'points' must be among {tuple(allowed)} "
                         f"(got {sorted(unknown)})")
    return tuple(points)
