r"""GNAQ, node-aware dynamic quantization of embedding tables (`Li et al.,
CIKM 2025 <https://doi.org/10.1145/3746252.3761244>`_).

Every node :math:`i` has :math:`b`-bit codes :math:`\mathbf{q}_i \in
\{0..2^b-1\}^d` and its own table of :math:`2^b` levels
:math:`\mathbf{s}_i`; its embedding is :math:`q'_{if} = s_i[q_{if}]`
(non-uniform, per node). From a pretrained float table :math:`\mathbf{E}`
(Eq. 1-6):

.. math::
    \mathrm{gap}_i = \frac{\max(\mathbf{e}_i) - \min(\mathbf{e}_i)}{2^b},
    \quad q_{if} = \mathrm{clamp}\Big(\Big\lfloor\frac{e_{if} - \min
    (\mathbf{e}_i)}{\mathrm{gap}_i}\Big\rfloor, 0, 2^b - 1\Big),\quad
    s_i[k] = \min(\mathbf{e}_i) + \tfrac{2k+1}{2}\,\mathrm{gap}_i

With the *dynamic step* (DQS) the levels are trained (float master copy,
stored as FP8 :obj:`torch.float8_e4m3fn`: the forward pass rounds them to
FP8 with a straight-through gradient, so what is trained is what ships),
through the embedding entries that read them.

Eq. 11 also appends the levels to the propagated encoding,
:math:`\mathbf{h}^{(0)}_i = [\mathbf{q}'_i, \mathbf{s}_i]`. The paper does
not say whether the scores read the propagated level channels; the
authors' released code propagates the embedding alone, and so do we by
default. With :obj:`append_levels=True` the :math:`2^b` level channels are
propagated and enter the dot-product scores, which then rank by level
magnitudes as well as by embeddings: on Gowalla at 2 bits and
:math:`d = 64`, quantizing a float LightGCN of validation Recall@20 0.196
gives 0.190 without the level channels and 0.077 with them (test Recall@20
after fine-tuning: 0.1701 and 0.1235).

Codes are re-assigned after each optimizer step by
:meth:`NodeAwareQuantizer.update_codes_`: the quantization boundaries of
node :math:`i` are the midpoints of its sorted levels (Fig. 3), and the
value assigned is either the node's float encoding (a straight-through
estimate) or, with the *relation-aware update* (RAU), its blend with the
mean of its neighbours' encodings (Eq. 14),

.. math::
    \tilde{\mathbf{e}}_i = (1 - \mu)\,\mathbf{e}_i + \mu\,
    \frac{1}{|\mathcal{N}_i|} \sum_{j \in \mathcal{N}_i} \mathbf{e}_j,

which the caller computes from the graph (this module has no graph
knowledge). Eq. 14 as written is :math:`\mu = 1`: a user's codes then
come from the mean of its items' encodings, a different vector, read under
the user's own levels. On Gowalla (2 bits, :math:`d = 64`, 20 fine-tuning
epochs from a float LightGCN of test Recall@20 0.1675) that gives test
Recall@20 0.1595, against 0.1701 at :math:`\mu = 0.25` and 0.1682 without
RAU (in a shorter run :math:`\mu = 0.5` fell below no RAU); so
:math:`\mu` is a setting, :obj:`relation_weight`.
"""
from typing import Optional

import torch
from torch import Tensor, nn

from pyg_qgnn.quantizers.base import Quantizer
from pyg_qgnn.quantizers.functional import (
    check_bits,
    check_finite,
    check_floating,
)

#: The storage type of the level tables.
LEVEL_DTYPE = torch.float8_e4m3fn


def round_to_fp8(levels: Tensor) -> Tensor:
    r""":obj:`levels` rounded to :obj:`torch.float8_e4m3fn` (saturating at
    :math:`\pm 448`) and back, with the straight-through gradient."""
    limit = torch.finfo(LEVEL_DTYPE).max
    stored = levels.detach().clamp(-limit, limit).to(LEVEL_DTYPE)
    # stored + 0 exactly: the value equals what a deployed model reads.
    return stored.to(levels.dtype) + (levels - levels.detach())


def initial_levels(x: Tensor, bits: int):
    r"""Codes and level tables of the rows of :obj:`x` (Eq. 1-6): each row's
    range cut into :math:`2^b` equal intervals, its levels their midpoints.

    Returns:
        :obj:`(codes, levels)` of shapes :math:`(N, d)` (:obj:`uint8`) and
        :math:`(N, 2^b)`.
    """
    check_bits(bits)
    check_floating(x, 'x')
    if x.dim() != 2:
        raise ValueError(f"'x' must be a (nodes, channels) table (got shape "
                         f"{tuple(x.shape)})")
    num_levels = 1 << bits
    low = x.amin(dim=1, keepdim=True)
    high = x.amax(dim=1, keepdim=True)
    check_finite(low, high)
    gap = ((high - low) / num_levels).clamp(min=torch.finfo(x.dtype).tiny)
    codes = torch.floor((x - low) / gap).clamp_(0, num_levels - 1)
    steps = torch.arange(num_levels, dtype=x.dtype, device=x.device)
    levels = low + (2 * steps + 1) / 2 * gap
    return codes.to(torch.uint8), levels


def boundaries(levels: Tensor):
    r"""The dynamic quantization boundaries (Fig. 3): the midpoints of each
    row's sorted levels, :math:`(N, 2^b - 1)`, and the sort order
    :math:`(N, 2^b)` that maps a sorted position back to a level index."""
    ordered, order = levels.sort(dim=1)
    return (ordered[:, 1:] + ordered[:, :-1]) / 2, order


def assign_codes(x: Tensor, levels: Tensor) -> Tensor:
    r"""The code of every entry of :obj:`x` :math:`(N, d)` under the levels
    :math:`(N, 2^b)` of its row: the index of the level whose interval
    (between the midpoints to its sorted neighbours) holds it; a value on a
    boundary goes to the upper interval, as in Eq. 2."""
    cuts, order = boundaries(levels.to(x.dtype))
    position = torch.searchsorted(cuts.contiguous(), x.contiguous(),
                                  right=True)
    return order.gather(1, position).to(torch.uint8)


class NodeAwareQuantizer(Quantizer):
    r"""Per-node codes and learned level tables of GNAQ (see the module
    docstring) for an embedding table :math:`\mathbf{E} \in
    \mathbb{R}^{N \times d}`.

    .. math::
        \hat{e}_{if} = \mathrm{fp8}(s_i)[q_{if}],\qquad
        \mathbf{h}^{(0)}_i = [\hat{\mathbf{e}}_i, \mathrm{fp8}(\mathbf{s}_i)]
        \ \text{(with appended levels)}

    The codes and levels are created from the first table the quantizer
    sees (:meth:`initialize`, the pretrained embedding). :meth:`forward`
    returns :math:`\hat{\mathbf{E}}`; the gradient of
    :math:`\hat{\mathbf{E}}` also reaches the float table
    :math:`\mathbf{E}` unchanged, so the float encodings follow training.
    After each optimizer step, :meth:`update_codes_` re-assigns the codes
    under the boundaries of the updated levels, to each node's own
    encoding (a straight-through estimate) or, with
    :obj:`relation_aware=True`, to its blend with its neighbours' mean
    (Eq. 14). (Re-assigning from the neighbours' *quantized* values
    instead, with no float table, smooths the embeddings a little more
    with every step: on a Gowalla subsample it took validation Recall@20
    from 0.35 to 0.19.)

    Args:
        bits (int, optional): Code width :math:`b` in :math:`[1, 8]`.
            (default: :obj:`2`)
        dynamic_step (bool, optional): Learn the levels (DQS). Off, they
            stay at their uniform initial values. (default: :obj:`True`)
        relation_aware (bool, optional): Re-assign codes from the blend
            with neighbour means (RAU, Eq. 14) rather than from each node's
            own encoding. (default: :obj:`True`)
        relation_weight (float, optional): The neighbours' share
            :math:`\mu \in (0, 1]` of the RAU blend; :obj:`1.0` is Eq. 14
            as written. (default: :obj:`0.25`)
        append_levels (bool, optional): Append the levels to the encoding
            that is propagated and scored (Eq. 11 read literally; needs
            :obj:`dynamic_step`). (default: :obj:`False`)

    Shapes:
        - **input:** the float table :math:`(N, d)`
        - **output:** :math:`(N, d)`; :meth:`extended`: :math:`(N, d + 2^b)`
          with :obj:`append_levels`, else :math:`(N, d)`
    """
    _lazy_state = ('levels', 'codes')

    def __init__(self, bits: int = 2, dynamic_step: bool = True,
                 relation_aware: bool = True, relation_weight: float = 0.25,
                 append_levels: bool = False):
        super().__init__()
        self.bits = check_bits(bits)
        if isinstance(relation_weight, bool) or not isinstance(
                relation_weight, (int, float)) or \
                not 0 < relation_weight <= 1:
            raise ValueError(f"'relation_weight' must be a number in (0, 1] "
                             f"(got {relation_weight!r})")
        if append_levels and not dynamic_step:
            raise ValueError("'append_levels=True' needs 'dynamic_step=True' "
                             "(fixed levels carry nothing to propagate)")
        self.dynamic_step = bool(dynamic_step)
        self.relation_aware = bool(relation_aware)
        self.relation_weight = float(relation_weight)
        self.append_levels = bool(append_levels)
        self.levels = nn.Parameter(torch.empty(0, 1 << bits),
                                   requires_grad=self.dynamic_step)
        self.register_buffer('codes', torch.empty(0, 0, dtype=torch.uint8))

    @property
    def num_levels(self) -> int:
        return 1 << self.bits

    @property
    def initialized(self) -> bool:
        return self.levels.numel() > 0

    def reset_parameters(self):
        self.levels.data = self.levels.data.new_empty(0, self.num_levels)
        self.codes = self.codes.new_empty(0, 0)

    @torch.no_grad()
    def initialize(self, x: Tensor):
        r"""Codes and levels from the float table :obj:`x` (Eq. 1-6)."""
        codes, levels = initial_levels(x.detach(), self.bits)
        self.codes = codes
        self.levels.data = levels

    def _check_table(self, x: Tensor):
        check_floating(x, 'x')
        if self.initialized and tuple(x.shape) != tuple(self.codes.shape):
            raise ValueError(f"'x' has shape {tuple(x.shape)} but the "
                             f"quantizer holds codes for a table of shape "
                             f"{tuple(self.codes.shape)} (one row per node)")

    def stored_levels(self) -> Tensor:
        r"""The levels as they are used and stored: rounded to FP8 (with
        the straight-through gradient to the float master copy)."""
        return round_to_fp8(self.levels)

    def _embed(self, x: Tensor, levels: Tensor) -> Tensor:
        self._check_table(x)
        out = self.dequantize(self.codes, levels)
        if x.requires_grad:  # the float encodings follow the gradient
            out = out + (x - x.detach())
        return out

    def forward(self, x: Tensor) -> Tensor:
        if not self.fake_quant_enabled:
            return x
        if not self.initialized:
            self.initialize(x)
        return self._embed(x, self.stored_levels())

    def extended(self, x: Tensor) -> Tensor:
        r"""The input of message passing, :math:`[\hat{\mathbf{E}},
        \mathbf{S}]` (Eq. 11) with :obj:`append_levels`, else
        :math:`\hat{\mathbf{E}}`."""
        if not self.fake_quant_enabled:
            return x
        if not self.initialized:
            self.initialize(x)
        levels = self.stored_levels()
        out = self._embed(x, levels)
        if not self.append_levels:
            return out
        return torch.cat([out, levels.to(out.dtype)], dim=1)

    @torch.no_grad()
    def quantize(self, x: Tensor) -> Tensor:
        r"""The codes of :obj:`x` :math:`(N, d)` under the current levels
        (boundaries at the midpoints of each node's sorted levels)."""
        check_floating(x, 'x')
        if not self.initialized:
            raise RuntimeError('the quantizer has no levels yet: call it or '
                               'initialize() on the pretrained table first')
        if x.dim() != 2 or x.size(0) != self.levels.size(0):
            raise ValueError(f"'x' must have one row per node "
                             f"({self.levels.size(0)}) (got shape "
                             f"{tuple(x.shape)})")
        check_finite(x)
        return assign_codes(x, self.stored_levels().detach())

    def dequantize(self, codes: Tensor,
                   levels: Optional[Tensor] = None) -> Tensor:
        r"""Embeddings :math:`s_i[q_{if}]` (Eq. 9) of :obj:`codes`, under
        :obj:`levels` (default: the stored FP8 levels)."""
        if codes.is_floating_point() or codes.is_complex():
            raise TypeError(f"'codes' must be an integer tensor (got dtype "
                            f"{codes.dtype})")
        if levels is None:
            levels = self.stored_levels().detach()
        return levels.gather(1, codes.long())

    @torch.no_grad()
    def update_codes_(self, source: Tensor):
        r"""Re-assigns every code to :obj:`source` :math:`(N, d)` under the
        current levels: the node's float encoding, or with RAU its blend
        with its neighbours' mean (Eq. 14). Call it after each optimizer
        step."""
        if self.fake_quant_enabled and self.initialized:
            self.codes = self.quantize(source)

    def extra_repr(self) -> str:
        nodes = f', nodes={self.levels.size(0)}' if self.initialized else ''
        rau = f', relation_weight={self.relation_weight:g}' \
            if self.relation_aware else ''
        return (f'bits={self.bits}, dynamic_step={self.dynamic_step}, '
                f'relation_aware={self.relation_aware}{rau}, '
                f'append_levels={self.append_levels}{nodes}')
