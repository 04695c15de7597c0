r"""What every quantized twin of a PyG layer shares."""
from typing import Dict, Optional, Tuple

from torch import Tensor, nn

from pyg_qgnn.quantizers import Quantizer

#: Where precision can be lost inside a layer, in the order data meets them.
QUANT_POINTS = ('input', 'weight', 'message', 'aggregate', 'output')


class QuantLayer:
    r"""Mixin of the quantized twins (:class:`QuantLinear`,
    :class:`QuantGCNConv`, ...).

    A twin subclasses its float parent, keeps its constructor arguments and
    state-dict keys, and adds one optional :class:`Quantizer` slot
    :obj:`<point>_quantizer` per entry of :obj:`quant_points`; with every
    slot :obj:`None` (or switched off) it computes exactly what its parent
    computes. :meth:`from_float` builds the twin of a trained float layer.
    """
    quant_points: Tuple[str, ...] = ()

    def _init_quantizers(self, quantizers: Dict[str, Optional[Quantizer]]):
        unknown = set(quantizers) - set(self.quant_points)
        if unknown:
            raise TypeError(f"'{type(self).__name__}' has no quantization "
                            f"point(s) {sorted(unknown)}; expected some of "
                            f"{list(self.quant_points)}")
        for point in self.quant_points:
            if isinstance(getattr(type(self), f'{point}_quantizer', None),
                          property):
                continue  # held by a sub-layer
            quantizer = quantizers.get(point)
            if quantizer is not None and not isinstance(quantizer, Quantizer):
                raise TypeError(f"'{point}_quantizer' must be a Quantizer or "
                                f"None (got {type(quantizer).__name__})")
            self.register_module(f'{point}_quantizer', quantizer)

    def quant(self, point: str, x: Tensor) -> Tensor:
        r"""Applies the quantizer at :obj:`point`, if any, to :obj:`x`."""
        quantizer = getattr(self, f'{point}_quantizer', None)
        return x if quantizer is None else quantizer(x)

    def reset_quantizers(self):
        for point in self.quant_points:
            quantizer = getattr(self, f'{point}_quantizer', None)
            if quantizer is not None:
                quantizer.reset_parameters()

    def quant_repr(self) -> str:
        parts = []
        for point in self.quant_points:
            quantizer = getattr(self, f'{point}_quantizer', None)
            if quantizer is not None:
                parts.append(f'{point}_bits={getattr(quantizer, "bits", "?")}')
        return ', '.join(parts)

    @classmethod
    def float_kwargs(cls, module: nn.Module) -> dict:
        r"""The constructor arguments that rebuild :obj:`module`."""
        raise TypeError(f"'{cls.__name__}' does not define float_kwargs()")

    @classmethod
    def from_float(cls, module: nn.Module, **quantizers):
        r"""The twin of :obj:`module` with its weights and the given
        quantizers (keyword :obj:`<point>=Quantizer`)."""
        twin = cls(**cls.float_kwargs(module),
                   **{f'{p}_quantizer': q
                      for p, q in quantizers.items()})
        params = list(module.parameters()) + list(module.buffers())
        if params:
            twin = twin.to(params[0].device)
        twin.load_state_dict(module.state_dict())
        twin.train(module.training)
        return twin
