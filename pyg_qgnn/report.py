r"""What quantization did to a model, layer by layer.

.. code-block:: python

    qmodel = quantize_model(model, DegreeQuant(bits=4))
    print(quantization_report(qmodel))
"""
import math
from dataclasses import asdict, dataclass, field
from typing import Iterator, List, Optional, Set

import torch
from torch import nn

from pyg_qgnn.nn.quant_layer import QuantLayer
from pyg_qgnn.quantizers import IntegerQuantizer, Quantizer
from pyg_qgnn.quantizers.a2q import A2QQuantizer, average_bits
from pyg_qgnn.quantizers.degree_quant import DegreeQuantizer
from pyg_qgnn.quantizers.observers import OBSERVERS
from pyg_qgnn.quantizers.packing import container_bits

_OBSERVER_NAMES = {cls: name for name, cls in OBSERVERS.items()}


@dataclass
class PointReport:
    r"""One quantization point of a layer: its quantizer and bit widths (for
    per-node A²Q widths, their mean, minimum and maximum)."""
    point: str
    quantizer: str
    mean_bits: Optional[float]
    min_bits: Optional[int]
    max_bits: Optional[int]
    detail: str = ''

    def bits_text(self) -> str:
        if self.mean_bits is None:
            return '?'
        if self.min_bits == self.max_bits:
            return str(self.min_bits)
        return f'{self.mean_bits:.2f} ({self.min_bits}..{self.max_bits})'


@dataclass
class LayerReport:
    r"""One quantized layer: its points and the bytes its weights take as
    stored by :func:`pyg_qgnn.deploy.save` (packed codes plus their scales
    and zero points, or floats where unquantized) next to their float size.
    """
    name: str
    layer: str
    points: List[PointReport]
    weight_bytes: int
    float_weight_bytes: int


@dataclass
class QuantizationReport:
    r"""The result of :func:`quantization_report`; :obj:`str()` gives a
    table, :meth:`to_dict` plain data."""
    layers: List[LayerReport] = field(default_factory=list)
    #: Memory-weighted mean bit width of all A²Q node parameters, if any.
    average_bits: Optional[float] = None

    @property
    def weight_bytes(self) -> int:
        return sum(layer.weight_bytes for layer in self.layers)

    @property
    def float_weight_bytes(self) -> int:
        return sum(layer.float_weight_bytes for layer in self.layers)

    def to_dict(self) -> dict:
        return dict(asdict(self), weight_bytes=self.weight_bytes,
                    float_weight_bytes=self.float_weight_bytes)

    def __str__(self) -> str:
        if not self.layers:
            return 'no quantized layers'
        rows = [('layer', 'type', 'points (bits)', 'weight bytes (float)')]
        for layer in self.layers:
            points = ', '.join(f'{p.point} {p.bits_text()}'
                               for p in layer.points)
            rows.append((layer.name, layer.layer, points,
                         f'{layer.weight_bytes:,} '
                         f'({layer.float_weight_bytes:,})'))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines = ['  '.join(cell.ljust(w) for cell, w in zip(row, widths))
                 .rstrip() for row in rows]
        lines.append(f'weights: {self.weight_bytes:,} bytes '
                     f'(float {self.float_weight_bytes:,})')
        if self.average_bits is not None:
            lines.append(f'A2Q average bits: {self.average_bits:.2f}')
        return '\n'.join(lines)


def quantization_report(model: nn.Module) -> QuantizationReport:
    r"""Lists every quantized layer of :obj:`model` (a :class:`QuantLayer`
    whose quantizers no enclosing layer already lists), each quantization
    point with its quantizer and bit widths, and the bytes the layer's
    weights take; for A²Q, the per-layer mean/min/max bit widths and the
    model's memory-weighted average bit width.

    Args:
        model (torch.nn.Module): A model returned by
            :func:`~pyg_qgnn.quantize_model` (or any module).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"'model' must be a torch.nn.Module "
                        f"(got {type(model).__name__})")
    seen: Set[int] = set()
    rows = []
    for name, module in model.named_modules():
        if not isinstance(module, QuantLayer):
            continue
        points = [(p, getattr(module, f'{p}_quantizer', None))
                  for p in module.quant_points]
        points = [(p, q) for p, q in points if q is not None]
        if points and all(id(q) in seen for _, q in points):
            continue  # listed with the layer that holds it
        seen.update(id(q) for _, q in points)
        rows.append((name or type(module).__name__, module, points))

    reported = {id(module) for _, module, _ in rows}
    layers = []
    for name, module, points in rows:
        stored, plain = _weight_bytes(_own_modules(module, reported))
        layers.append(LayerReport(name, type(module).__name__,
                                  [_point_report(p, q, module)
                                   for p, q in points], stored, plain))
    a2q_quantizers = [m for m in model.modules()
                      if isinstance(m, A2QQuantizer) and m.initialized]
    average = None
    if a2q_quantizers:
        with torch.no_grad():
            average = float(average_bits(a2q_quantizers, last_pass=False))
    return QuantizationReport(layers, average)


def _own_modules(module: nn.Module, reported: Set[int]) -> Iterator[nn.Module]:
    r""":obj:`module` and its descendants, except quantizers and other
    reported layers (with everything under them)."""
    yield module
    for child in module.children():
        if id(child) not in reported and not isinstance(child, Quantizer):
            yield from _own_modules(child, reported)


def _weight_bytes(modules: Iterator[nn.Module]):
    stored = plain = 0
    for module in modules:
        weight = getattr(module, 'weight', None)
        if not isinstance(weight, nn.Parameter) or isinstance(
                weight, nn.parameter.UninitializedParameter):
            continue
        size = weight.numel() * weight.element_size()
        plain += size
        quantizer = getattr(module, 'weight_quantizer', None)
        if isinstance(quantizer, IntegerQuantizer) and \
                quantizer.fake_quant_enabled:
            codes = math.ceil(weight.numel() * container_bits(quantizer.bits)
                              / 8)
            qparams = sum(t.numel() * t.element_size()
                          for t in (quantizer.scale, quantizer.zero_point))
            stored += codes + qparams
        else:
            stored += size
    return stored, plain


def _point_report(point: str, quantizer: Quantizer,
                  layer: nn.Module) -> PointReport:
    kind = type(quantizer).__name__
    if isinstance(quantizer, A2QQuantizer):
        if not quantizer.initialized:
            bits = quantizer.init_bits
            return PointReport(point, kind, float(bits), bits, bits,
                               'per node, not yet initialized')
        widths = quantizer.rounded_bits().detach()
        count = widths.numel()
        detail = (f'{count} groups' if quantizer.num_groups else
                  f'{count} nodes')
        return PointReport(point, kind, float(widths.mean()),
                           int(widths.min()), int(widths.max()), detail)
    bits = getattr(quantizer, 'bits', None)
    if not isinstance(bits, int):
        return PointReport(point, kind, None, None, None)
    detail = ''
    if isinstance(quantizer, IntegerQuantizer):
        observer = _OBSERVER_NAMES.get(type(quantizer.observer), '')
        detail = (f'{quantizer.granularity}, grad={quantizer.grad}' +
                  ('' if quantizer.dynamic or quantizer.grad == 'lsq'
                   else f', observer={observer}'))
    if isinstance(quantizer, DegreeQuantizer):
        hooks = getattr(layer, '_degree_quant_hooks', None)
        if hooks is not None:
            detail += f', protect p={hooks.p_min}..{hooks.p_max}'
    return PointReport(point, kind, float(bits), bits, bits, detail)
