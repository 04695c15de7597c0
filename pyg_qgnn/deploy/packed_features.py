r"""Node features stored as integer codes, each node's row at its own bit
width.

A²Q gives every node (or node group) its own learned bit width, so a graph's
quantized features need :math:`\sum_i F\,b_i / 8` bytes, not :math:`4F`
per node. :func:`pack_features` stores them that way: the rows of each
container width (1, 2, 4 or 8 bits; 3-bit codes take 4) packed together in
node order, with each node's width and step. :meth:`PackedFeatures.unpack`
gives back the :class:`~pyg_qgnn.deploy.integer_codec.Codes` the codec
computes, bit for bit, ready for a deployed layer, and the module saves and
loads like any deployed model (:func:`~pyg_qgnn.deploy.save`).

.. code-block:: python

    codec = deployed.convs[0].input_quantizer      # a deployed A²Q layer
    packed = pack_features(codec, data.x)
    deploy.nbytes(packed)                          # about N * F * 2.3 / 8
    codes = packed.unpack()                        # == codec.encode(data.x)
"""
import torch
from torch import Tensor, nn

from pyg_qgnn.deploy.integer_codec import Codes, IntegerCodec
from pyg_qgnn.deploy.integer_elementwise import quantize
from pyg_qgnn.quantizers.base import LazyStateMixin
from pyg_qgnn.quantizers.packing import PACKABLE_BITS
from pyg_qgnn.quantizers.packing import pack_bits, unpack_bits


class PackedFeatures(LazyStateMixin, nn.Module):
    r"""Integer codes of a node feature matrix :math:`(N, F)`, every row
    packed at the container width of its own bit width.

    Buffers: :obj:`bits` :math:`(N)` (:obj:`uint8`), :obj:`step` (one per
    row, or one for all), :obj:`zero_point`, :obj:`signed`, and
    :obj:`codes_<w>` for each container width :math:`w` present, the rows
    of that width in node order, :math:`\lceil F w / 8\rceil` bytes each.

    Args:
        num_features (int): :math:`F`.
    """
    _lazy_state = ('bits', 'step', 'zero_point', 'signed') + tuple(
        f'codes_{w}' for w in PACKABLE_BITS)

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features
        self.register_buffer('bits', torch.empty(0, dtype=torch.uint8))
        self.register_buffer('step', torch.empty(0))
        self.register_buffer('zero_point', torch.empty(0))
        self.register_buffer('signed', torch.empty(0, dtype=torch.bool))
        for width in PACKABLE_BITS:
            self.register_buffer(f'codes_{width}',
                                 torch.empty(0, dtype=torch.uint8))

    def _widths(self) -> Tensor:
        widths = torch.full_like(self.bits, 8)
        for width in (4, 2, 1):
            widths[self.bits <= width] = width
        return widths

    def _lowest(self) -> Tensor:
        r"""The smallest code of each row (its offset in the packing)."""
        if bool(self.signed):
            return -(2 ** (self.bits.to(torch.int16) - 1))
        return torch.zeros_like(self.bits, dtype=torch.int16)

    @torch.no_grad()
    def unpack(self) -> Codes:
        r"""The :obj:`int8` :class:`Codes` (as :meth:`IntegerCodec.encode`
        stores them: unsigned codes shifted by :math:`-128`)."""
        widths = self._widths()
        shift = 0 if bool(self.signed) else -128
        offset = torch.empty(self.bits.numel(), self.num_features,
                             dtype=torch.int16, device=self.bits.device)
        for width in PACKABLE_BITS:
            rows = (widths == width).nonzero().view(-1)
            if rows.numel():
                offset[rows] = unpack_bits(getattr(self, f'codes_{width}'),
                                           width, self.num_features).to(
                                               torch.int16)
        values = (offset + self._lowest().view(-1, 1) + shift).to(torch.int8)
        step = self.step.view(-1, 1) if self.step.numel() > 1 else self.step
        return Codes(values, step, int(self.zero_point) + shift)

    def extra_repr(self) -> str:
        if not self.bits.numel():
            return f'num_features={self.num_features}'
        average = float(self.bits.float().mean())
        return (f'{self.bits.numel()} nodes x {self.num_features}, '
                f'average bits={average:.2f}')


def _row_bits(codec: IntegerCodec, x: Tensor) -> Tensor:
    if codec.kind == 'a2q':
        return codec._a2q_params(x)[1].view(-1).to(torch.uint8)
    levels = codec.qmax - codec.qmin + 1
    return torch.full((x.size(0), ), (levels - 1).bit_length(),
                      dtype=torch.uint8, device=x.device)


@torch.no_grad()
def pack_features(codec: IntegerCodec, x: Tensor) -> PackedFeatures:
    r"""The codes of the node features :obj:`x` :math:`(N, F)` on the grid of
    :obj:`codec` (an :class:`IntegerCodec` of a deployed layer), each row at
    its own width.

    Args:
        codec (IntegerCodec): The frozen quantizer, e.g. the
            :obj:`input_quantizer` of a deployed layer.
        x (torch.Tensor): Finite node features :math:`(N, F)`.
    """
    if not isinstance(codec, IntegerCodec):
        raise TypeError(f"'codec' must be an IntegerCodec, the input_quantizer "
                        f"of a deployed layer (got {type(codec).__name__})")
    if not isinstance(x, Tensor) or x.dim() != 2:
        raise ValueError(f"'x' must be a (nodes, features) matrix (got "
                         f"{getattr(x, 'shape', type(x).__name__)})")
    step, zero, qmin, qmax = codec._grid(x)
    codes = quantize(x, step, zero, qmin, qmax, codec.shift).to(
        torch.int16) - codec.shift  # the trained codes, unsigned ones too
    packed = PackedFeatures(x.size(1))
    packed.bits = _row_bits(codec, x)
    packed.signed = torch.tensor([codec.signed], device=x.device)
    packed.step = step.reshape(-1).float().clone() if step.numel() > 1 \
        else step.reshape(()).float().clone()
    packed.zero_point = torch.tensor(float(zero), device=x.device)
    offset = codes - packed._lowest().view(-1, 1)
    widths = packed._widths()
    for width in PACKABLE_BITS:
        rows = (widths == width).nonzero().view(-1)
        if rows.numel():
            setattr(packed, f'codes_{width}', pack_bits(offset[rows], width))
    return packed
