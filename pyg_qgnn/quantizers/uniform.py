r"""Uniform integer quantization of 1 to 8 bits."""
from typing import Optional, Union

import torch
from torch import Tensor, nn

from pyg_qgnn.quantizers.base import Quantizer
from pyg_qgnn.quantizers.functional import (
    GRADS,
    affine_codes,
    check_bits,
    check_finite,
    check_floating,
    fake_quantize,
    lsq_fake_quantize,
    quant_range,
)
from pyg_qgnn.quantizers.observers import OBSERVERS, Observer, make_observer

GRANULARITIES = ('tensor', 'channel', 'node')


class IntegerQuantizer(Quantizer):
    r"""Uniform affine quantizer of :obj:`bits` bits.

    .. math::
        q = \mathrm{clamp}(\lfloor x/s + z\rceil, q_{min}, q_{max}),\qquad
        \hat{x} = s\,(q - z)

    with :math:`s = (r_{max} - r_{min}) / (q_{max} - q_{min})` and
    :math:`z = q_{min} - \lfloor r_{min}/s\rceil` from the observed range
    :math:`[r_{min}, r_{max}]`, widened to contain :math:`0` so that zero
    is exact. In training :meth:`forward` updates the range and returns
    :math:`\hat{x}`; in evaluation it uses the stored range. A quantizer that
    has never seen data calibrates on its first input, in either mode.

    Args:
        bits (int, optional): Bit width in :math:`[1, 8]`. (default: :obj:`8`)
        signed (bool, optional): Codes in :math:`[-2^{b-1}, 2^{b-1}-1]`
            (:obj:`torch.int8`) rather than :math:`[0, 2^b-1]`
            (:obj:`torch.uint8`). (default: :obj:`True`)
        granularity (str, optional): One range for the whole tensor
            (:obj:`"tensor"`), one per slice along :obj:`channel_axis`
            (:obj:`"channel"`), or one per row (:obj:`"node"`). Per-node
            ranges follow the node set: on a graph with another number of
            nodes they are recomputed from the input. (default: :obj:`"tensor"`)
        observer (str or Observer, optional): How the range is tracked:
            :obj:`"abs"`, :obj:`"mom"` or :obj:`"per"`, see
            :mod:`pyg_qgnn.quantizers.observers`. (default: :obj:`"mom"`)
        grad (str, optional): :obj:`"ste"`, :obj:`"clipped"` (see
            :func:`~pyg_qgnn.quantizers.fake_quantize`), or :obj:`"lsq"`: the
            step :math:`s` becomes a learned parameter (initialized to
            :math:`2\,\mathrm{mean}|x|/\sqrt{q_{max}}`, zero point :math:`0`)
            trained with :func:`~pyg_qgnn.quantizers.lsq_fake_quantize`.
            (default: :obj:`"ste"`)
        symmetric (bool, optional): Zero point fixed at :math:`0` and a range
            symmetric around it, as integer matrix products prefer for
            weights; needs :obj:`bits >= 2`. (default: :obj:`False`)
        channel_axis (int, optional): The axis of :obj:`"channel"`
            granularity. (default: :obj:`-1`)
        dynamic (bool, optional): Compute the range from each input, in
            training and evaluation alike, with no history (the right choice
            for weights, whose current values are known). (default: :obj:`False`)

    Shapes:
        - **input:** any :math:`(*)` floating-point tensor
        - **output:** :math:`(*)`, same dtype
    """
    _lazy_state = ('scale', 'zero_point')

    def __init__(self, bits: int = 8, signed: bool = True,
                 granularity: str = 'tensor',
                 observer: Union[str, Observer] = 'mom', grad: str = 'ste',
                 symmetric: bool = False, channel_axis: int = -1,
                 dynamic: bool = False):
        super().__init__()
        self.bits = check_bits(bits)
        if granularity not in GRANULARITIES:
            raise ValueError(f"'granularity' must be one of {GRANULARITIES} "
                             f"(got {granularity!r})")
        if grad not in GRADS + ('lsq', ):
            raise ValueError(f"'grad' must be one of {GRADS + ('lsq', )} "
                             f"(got {grad!r})")
        if symmetric and bits < 2:
            raise ValueError(f"'symmetric' quantization needs 'bits' >= 2 "
                             f"(got {bits})")
        self.signed = signed
        self.granularity = granularity
        self.grad = grad
        self.symmetric = symmetric or grad == 'lsq'
        self.channel_axis = channel_axis
        self.dynamic = dynamic
        self.qmin, self.qmax = quant_range(bits, signed)
        self.observer = make_observer(observer)
        if grad == 'lsq':
            self.scale = nn.Parameter(torch.empty(0))
        else:
            self.register_buffer('scale', torch.empty(0))
        self.register_buffer('zero_point', torch.empty(0))

    def reset_parameters(self):
        self.observer.reset_parameters()
        if isinstance(self.scale, nn.Parameter):
            self.scale.data = self.scale.data.new_empty(0)
        else:
            self.scale = self.scale.new_empty(0)
        self.zero_point = self.zero_point.new_empty(0)

    @property
    def initialized(self) -> bool:
        return self.scale.numel() > 0

    @property
    def code_dtype(self) -> torch.dtype:
        return torch.int8 if self.signed else torch.uint8

    # Layout: ranges live in a (C,) vector; a 2-D (C, L) view feeds observers.
    def _axis(self, x: Tensor) -> Optional[int]:
        if self.granularity == 'tensor':
            return None
        if x.dim() == 0:
            raise ValueError(f"'{self.granularity}' granularity needs a tensor "
                             f"with at least one dimension")
        return 0 if self.granularity == 'node' else self.channel_axis % x.dim()

    @staticmethod
    def _rows(x: Tensor, axis: Optional[int]) -> Tensor:
        if axis is None:
            return x.reshape(1, -1)
        return x.movedim(axis, 0).reshape(x.size(axis), -1)

    @staticmethod
    def _broadcast(v: Tensor, x: Tensor, axis: Optional[int]) -> Tensor:
        if axis is None:
            return v.reshape(())
        shape = [1] * x.dim()
        shape[axis] = -1
        return v.reshape(shape)

    @torch.no_grad()
    def _observe(self, x: Tensor, axis: Optional[int]):
        rows = self._rows(x, axis)
        if self.grad == 'lsq':
            if self.initialized:  # the step is learned, not observed
                return
            mean_abs = rows.abs().mean(dim=1)
            check_finite(mean_abs)
            step = 2 * mean_abs / max(self.qmax, 1) ** 0.5
            self.scale.data = step.clamp(min=torch.finfo(x.dtype).eps)
            self.zero_point = torch.zeros_like(step)
            return
        before = (self.observer.min_val, self.observer.max_val)
        lo, hi = self.observer(rows, restart=self.dynamic)
        if (self.dynamic and self.initialized and torch.equal(before[0], lo)
                and torch.equal(before[1], hi)):
            return  # same range: keep the scale bit for bit (see pin_range)
        self.scale, self.zero_point = self.qparams(lo, hi)

    def qparams(self, lo: Tensor, hi: Tensor):
        r"""Scale and zero point covering :math:`[lo, hi] \cup \{0\}`."""
        lo, hi = lo.clamp(max=0), hi.clamp(min=0)
        eps = torch.finfo(lo.dtype).eps
        if self.symmetric:
            top = torch.maximum(-lo, hi) if self.signed else hi
            scale = (top / self.qmax).clamp(min=eps)
            return scale, torch.zeros_like(scale)
        levels = self.qmax - self.qmin
        # hi/n - lo/n: (hi - lo) overflows for ranges near the float maximum.
        scale = (hi / levels - lo / levels).clamp(min=eps)
        zero_point = (self.qmin - torch.round(lo / scale)).clamp(
            self.qmin, self.qmax)
        return scale, zero_point

    def _prepare(self, x: Tensor, name: str):
        check_floating(x, name)
        axis = self._axis(x)
        stale = (axis is not None and self.initialized
                 and self.scale.numel() != x.size(axis))
        if stale and self.grad == 'lsq':
            raise ValueError(f"learned steps cover {self.scale.numel()} "
                             f"{self.granularity}s but '{name}' has "
                             f"{x.size(axis)} along axis {axis}")
        if (not self.initialized or stale or self.dynamic
                or (self.training and self.observer_enabled)):
            self._observe(x, axis)
        return axis

    @torch.no_grad()
    def pin_range(self, x: Tensor):
        r"""Declares the stored scale and zero point to be those of :obj:`x`:
        a :obj:`dynamic` quantizer keeps them until the range of its input
        differs from that of :obj:`x`. Used when loading a checkpoint, whose
        weights are already on the grid: recomputing the scale from them could
        differ from the saved one in the last bit."""
        self.observer(self._rows(x, self._axis(x)), restart=True)

    def _step(self) -> Tensor:
        if self.grad == 'lsq':
            return self.scale.clamp(min=torch.finfo(self.scale.dtype).eps)
        return self.scale

    def forward(self, x: Tensor) -> Tensor:
        if not self.fake_quant_enabled or x.numel() == 0:
            return x
        axis = self._prepare(x, 'x')
        step = self._broadcast(self._step(), x, axis)
        if self.grad == 'lsq':
            return lsq_fake_quantize(x, step, self.qmin, self.qmax)
        zero_point = self._broadcast(self.zero_point, x, axis)
        return fake_quantize(x, step, zero_point, self.qmin, self.qmax,
                             self.grad)

    @torch.no_grad()
    def quantize(self, x: Tensor) -> Tensor:
        r"""Integer codes of :obj:`x` (:obj:`torch.int8` if :obj:`signed`,
        else :obj:`torch.uint8`) on the current grid."""
        axis = self._prepare(x, 'x') if x.numel() else self._axis(x)
        if x.numel() == 0:
            return torch.empty_like(x, dtype=self.code_dtype)
        if not bool(torch.isfinite(x).all()):
            raise ValueError("'x' contains NaN or Inf values, which have no "
                             "integer code; expected finite values")
        step = self._broadcast(self._step(), x, axis)
        zero_point = self._broadcast(self.zero_point, x, axis)
        codes = affine_codes(x, step, zero_point, self.qmin, self.qmax)
        return codes.to(self.code_dtype)

    @torch.no_grad()
    def dequantize(self, codes: Tensor) -> Tensor:
        r"""Floats :math:`s\,(q - z)` of integer :obj:`codes`."""
        if codes.is_floating_point() or codes.is_complex():
            raise TypeError(f"'codes' must be an integer tensor "
                            f"(got dtype {codes.dtype})")
        if not self.initialized:
            raise RuntimeError('the quantizer has no range yet: call it or '
                               'quantize() on data first')
        axis = self._axis(codes)
        step = self._broadcast(self._step(), codes, axis)
        zero_point = self._broadcast(self.zero_point, codes, axis)
        return (codes.to(step.dtype) - zero_point) * step

    def __repr__(self) -> str:
        names = {cls: name for name, cls in OBSERVERS.items()}
        observer = repr(names.get(type(self.observer), self.observer))
        extra = ', symmetric=True' if self.symmetric and self.grad != 'lsq' else ''
        extra += ', dynamic=True' if self.dynamic else ''
        return (f'{self.__class__.__name__}(bits={self.bits}, '
                f'signed={self.signed}, granularity={self.granularity!r}, '
                f'observer={observer}, grad={self.grad!r}{extra})')
