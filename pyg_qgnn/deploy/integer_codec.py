r"""Integer codes of node features and weights, as the deployed integer
layers (:mod:`pyg_qgnn.deploy.integer`) store and compute with them.

A trained quantizer becomes an :class:`IntegerCodec`: its ranges, frozen,
turn floats into :obj:`int8` codes (:meth:`~IntegerCodec.encode`) and back.
Both kinds of activation quantizer of the library fit one form,

.. math::
    \hat{x}_{if} = r_i\,(c_{if} - z),\qquad c_{if} \in [-128, 127],

with one step :math:`r` for the tensor (:class:`~pyg_qgnn.quantizers.
IntegerQuantizer`, :class:`~pyg_qgnn.quantizers.DegreeQuantizer` in
evaluation) or one per node (:class:`~pyg_qgnn.quantizers.A2QQuantizer`,
whose nodes keep their own learned widths inside the :obj:`int8`
container). Unsigned codes are stored shifted by :math:`-128`, with the zero
point shifted alike, so every code is an :obj:`int8` that
:func:`torch._int_mm` takes. A row step factors out of a matrix product,
:math:`\hat{\mathbf{X}}\mathbf{W}^{\top} = \mathrm{diag}(r)\,
(\mathbf{C} - z)\,\mathbf{W}^{\top}`, which is why integer GEMMs and integer
aggregation see codes only.
"""
from typing import NamedTuple, Optional

import torch
from torch import Tensor, nn

from pyg_qgnn.quantizers import A2QQuantizer, IntegerQuantizer, Quantizer
from pyg_qgnn.deploy.integer_elementwise import quantize
from pyg_qgnn.quantizers.a2q import assign_nearest, code_range
from pyg_qgnn.quantizers.base import LazyStateMixin
from pyg_qgnn.quantizers.functional import check_floating
from pyg_qgnn.quantizers.packing import container_bits, pack_bits, unpack_bits

#: The most input features an int32 accumulator of int8 products can sum
#: without overflow: :math:`K \cdot 128^2 < 2^{31}`.
MAX_GEMM_DEPTH = (1 << 31) // (128 * 128) - 1


class Codes(NamedTuple):
    r"""Node features as :obj:`int8` codes :math:`c` with the step
    :math:`r` (a scalar, or one per row :math:`(N, 1)`) and the integer zero
    point :math:`z`: :math:`\hat{x} = r\,(c - z)`."""
    values: Tensor
    step: Tensor
    zero_point: int

    def dequantize(self) -> Tensor:
        return (self.values.to(self.step.dtype) - self.zero_point) * self.step


def _shift(signed: bool) -> int:
    return 0 if signed else -128


class IntegerCodec(LazyStateMixin, nn.Module):
    r"""The frozen, inference-only form of a trained activation quantizer:
    :meth:`encode` gives :obj:`int8` :class:`Codes`, :meth:`forward` the
    dequantized values (what the trained quantizer returns in evaluation,
    bit for bit). Built by :meth:`from_quantizer`.

    It takes a quantizer's place in a deployed layer but has no observer and
    no switch: a deployed model always computes on its trained grid.

    Args:
        kind (str): :obj:`"affine"` (one step and zero point) or
            :obj:`"a2q"` (a step and bit width per node or node group).
        signed (bool): Whether the trained codes are signed.
        qmin (int, optional): Smallest code of an affine codec.
        qmax (int, optional): Largest code of an affine codec.
        num_groups (int, optional): A²Q's fixed pool of groups, if any.
    """
    _lazy_state = ('step', 'zero_point', 'bits')

    def __init__(self, kind: str, signed: bool, qmin: int = -128,
                 qmax: int = 127, num_groups: Optional[int] = None):
        super().__init__()
        if kind not in ('affine', 'a2q'):
            raise ValueError(f"'kind' must be 'affine' or 'a2q' (got {kind!r})")
        self.kind, self.signed = kind, signed
        self.qmin, self.qmax, self.num_groups = qmin, qmax, num_groups
        self.register_buffer('step', torch.empty(0))
        self.register_buffer('zero_point', torch.empty(0))
        self.register_buffer('bits', torch.empty(0, dtype=torch.uint8))

    @classmethod
    @torch.no_grad()
    def from_quantizer(cls, quantizer: Quantizer,
                       name: str = 'quantizer') -> 'IntegerCodec':
        r"""The codec of a trained :obj:`quantizer` (named :obj:`name` in
        errors)."""
        if isinstance(quantizer, A2QQuantizer):
            if not quantizer.initialized:
                raise ValueError(f"the '{name}' has never seen data: run the "
                                 f"model on a graph before convert()")
            codec = cls('a2q', bool(quantizer.is_signed),
                        num_groups=quantizer.num_groups)
            codec.step = quantizer.step.detach().float().clone()
            codec.bits = quantizer.rounded_bits().detach().to(torch.uint8)
            codec.zero_point = torch.zeros(())
            return codec
        if not isinstance(quantizer, IntegerQuantizer):
            raise TypeError(f"the '{name}' is a {type(quantizer).__name__}, "
                            f"which has no integer form; expected an "
                            f"IntegerQuantizer, DegreeQuantizer or "
                            f"A2QQuantizer")
        if not quantizer.initialized:
            raise ValueError(f"the '{name}' has never seen data (its "
                             f"observer holds no range): run the model on a "
                             f"graph before convert()")
        if quantizer.granularity != 'tensor' or quantizer.dynamic:
            raise ValueError(f"the '{name}' has granularity "
                             f"{quantizer.granularity!r}"
                             f"{' and a dynamic range' if quantizer.dynamic else ''}"
                             f"; node features deploy with one fixed range "
                             f"per tensor (granularity='tensor', "
                             f"dynamic=False) or A2Q's per-node steps")
        codec = cls('affine', quantizer.signed, quantizer.qmin,
                    quantizer.qmax)
        codec.step = quantizer._step().detach().float().reshape(()).clone()
        codec.zero_point = quantizer.zero_point.detach().float().reshape(
            ()).clone()
        return codec

    @property
    def shift(self) -> int:
        r"""What is added to a trained code to store it as :obj:`int8`."""
        return _shift(self.signed)

    def _a2q_params(self, rows: Tensor):
        index = None
        if self.num_groups is not None or rows.size(0) != self.step.numel():
            index = assign_nearest(self.step, self.bits.float(), self.signed,
                                   rows)
        step, bits = self.step, self.bits.float()
        if index is not None:
            step, bits = step[index], bits[index]
        return step.view(-1, 1), bits.view(-1, 1)

    def _grid(self, x: Tensor):
        r"""Step, zero point and code range of the rows of :obj:`x`."""
        check_floating(x, 'x')
        if self.kind == 'affine':
            return self.step, float(self.zero_point), self.qmin, self.qmax
        if x.dim() != 2:
            raise ValueError(f"'x' must be a (nodes, features) matrix for "
                             f"per-node steps (got shape {tuple(x.shape)})")
        step, bits = self._a2q_params(x)
        qmin, qmax = code_range(bits, self.signed)
        return step, 0., qmin, qmax

    @torch.no_grad()
    def encode(self, x: Tensor) -> Codes:
        r""":obj:`int8` :class:`Codes` of the node features :obj:`x`."""
        step, zero, qmin, qmax = self._grid(x)
        values = quantize(x, step, zero, qmin, qmax, self.shift)
        return Codes(values, step, int(zero) + self.shift)

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        r"""The trained quantizer's evaluation output: :math:`r\,(c - z)`."""
        if x.numel() == 0:
            return x
        step, zero, qmin, qmax = self._grid(x)
        return quantize(x, step, zero, qmin, qmax, fake=True).view_as(x)

    @torch.no_grad()
    def fake_(self, x: Tensor) -> Tensor:
        r""":meth:`forward`, written over :obj:`x` where it can be (a float32
        intermediate the caller owns)."""
        if x.numel() == 0:
            return x
        step, zero, qmin, qmax = self._grid(x)
        return quantize(x, step, zero, qmin, qmax, fake=True,
                        inplace=True).view_as(x)

    def extra_repr(self) -> str:
        if self.kind == 'a2q' and self.bits.numel():
            low, high = int(self.bits.min()), int(self.bits.max())
            bits = str(low) if low == high else f'{low}..{high}'
            return f"a2q, bits={bits}, groups={self.bits.numel()}"
        return (f'affine, codes=[{self.qmin}, {self.qmax}], '
                f'signed={self.signed}')


class IntegerWeight(LazyStateMixin, nn.Module):
    r"""A weight matrix :math:`(O, K)` stored as symmetric integer codes with
    one step per output channel (or one for all), packed :math:`8/b` to a
    byte at :math:`b \le 4` bits and unpacked once, on first use after
    building or loading.

    Args:
        bits (int): The code width of the trained weight quantizer.
        shape (tuple): :math:`(O, K)`.
    """
    _lazy_state = ('packed', 'step')

    def __init__(self, bits: int, shape: tuple):
        super().__init__()
        self.bits, self.width = bits, container_bits(bits)
        self.shape = tuple(shape)
        self.qmin = -(1 << (bits - 1))
        self.register_buffer('packed', torch.empty(0, dtype=torch.uint8))
        self.register_buffer('step', torch.empty(0))
        self._unpacked = None  # (key, int8 codes (O, K), row sums (O,))

    @classmethod
    @torch.no_grad()
    def from_quantizer(cls, weight: Tensor, quantizer: Quantizer,
                       name: str = 'weight_quantizer') -> 'IntegerWeight':
        if not isinstance(quantizer, IntegerQuantizer):
            raise TypeError(f"the '{name}' is a {type(quantizer).__name__}; "
                            f"integer weights need an IntegerQuantizer")
        if not quantizer.symmetric or quantizer.bits < 2:
            raise ValueError(f"the '{name}' is not symmetric (bits="
                             f"{quantizer.bits}); integer GEMMs need weights "
                             f"with zero point 0 (symmetric=True, bits >= 2)")
        if weight.dim() != 2:
            raise ValueError(f"'weight' must be a matrix (got shape "
                             f"{tuple(weight.shape)})")
        if weight.size(1) > MAX_GEMM_DEPTH:
            raise ValueError(f"'weight' has {weight.size(1)} input features; "
                             f"int32 accumulation holds at most "
                             f"{MAX_GEMM_DEPTH}")
        codes = quantizer.quantize(weight)
        step = quantizer._step().detach().float()
        if step.numel() > 1:
            if quantizer.granularity != 'channel' or (
                    quantizer.channel_axis % 2 != 0):
                raise ValueError(f"the '{name}' must keep one step per output "
                                 f"channel (channel_axis=0) or per tensor")
        out = cls(quantizer.bits, weight.shape)
        out.packed = pack_bits((codes.to(torch.int16) - out.qmin).reshape(-1),
                               out.width)
        out.step = step.reshape(-1).clone()
        return out

    def codes(self) -> Tensor:
        r"""The :obj:`int8` codes :math:`(O, K)`."""
        return self._cached()[0]

    def row_sums(self) -> Tensor:
        r""":math:`\sum_k w_{ok}` in :obj:`int32`, for zero points."""
        return self._cached()[1]

    def _cached(self):
        key = (self.packed.data_ptr(), self.packed._version,
               self.packed.device)
        if self._unpacked is None or self._unpacked[0] != key:
            numel = self.shape[0] * self.shape[1]
            codes = unpack_bits(self.packed, self.width, numel)
            codes = (codes.to(torch.int16) + self.qmin).to(torch.int8)
            codes = codes.view(self.shape).contiguous()
            self._unpacked = (key, codes, codes.sum(dim=1, dtype=torch.int32))
        return self._unpacked[1:]

    def dequantize(self) -> Tensor:
        r"""The float weight the trained model used."""
        return self.codes().float() * self.step.view(-1, 1)

    def extra_repr(self) -> str:
        per = 'channel' if self.step.numel() > 1 else 'tensor'
        return (f'{self.shape[0]}x{self.shape[1]}, bits={self.bits}, '
                f'stored as {self.width}-bit codes, step per {per}')
