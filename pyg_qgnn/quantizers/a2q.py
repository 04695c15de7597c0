r"""A²Q, aggregation-aware quantization (`Zhu et al., 2023
<https://arxiv.org/abs/2302.00193>`_): a learned step size and bit width for
every node's features.

Nodes differ: a node that aggregates many neighbours has larger, more
varied features than a leaf, so each node :math:`i` gets its own step
:math:`\alpha_i` and bit width :math:`b_i`. Both are trained with the
*local gradient* of the node's own quantization error (most nodes of a
semi-supervised task get no useful task gradient), and a memory penalty
(:func:`memory_penalty`) pulls the average bit width towards a budget.

Parameters are indexed by node id on the graph they were built on. A graph
with another number of nodes (graph classification, inductive node tasks)
or a quantizer built with a fixed pool of :obj:`num_groups` parameter pairs
uses the paper's nearest-neighbour rule: node :math:`i` takes the pair whose
largest representable value :math:`\alpha_j\,2^{b_j-1}` is nearest to
:math:`\max_f |x_{if}|`.
"""
import math
import numbers
from typing import Iterable, Optional, Union

import torch
from torch import Tensor, nn

from pyg_qgnn.quantizers.base import Quantizer
from pyg_qgnn.quantizers.functional import GRADS, check_bits, check_floating

MIN_BITS, MAX_BITS = 1, 8


def code_range(bits: Tensor, signed: bool):
    r"""The code range :math:`[q_{min}, q_{max}]` of float bit widths."""
    if signed:
        half = torch.exp2(bits - 1)
        return -half, half - 1
    return torch.zeros_like(bits), torch.exp2(bits) - 1


class _A2QFakeQuantize(torch.autograd.Function):
    # The step and bit-width gradients are local (they do not depend on the
    # incoming gradient), so they are reduced to one value per row here, in
    # the forward pass: backward then touches (N, F) memory once.
    @staticmethod
    def forward(ctx, x, step, bits, signed, clipped):
        qmin, qmax = code_range(bits, signed)
        v = x / step
        q = torch.round(v)
        above, below = v > qmax, v < qmin
        inside = ~(above | below)
        # Local gradient of E_i = mean_f |x̂_if - x_if|: d x̂/d step is
        # round(v) - v inside the range and the bound outside, times the
        # sign of the error; d x̂/d bits is step times d bound/d bits outside.
        share_above = above.mean(dim=1, keepdim=True, dtype=x.dtype)
        share_below = below.mean(dim=1, keepdim=True, dtype=x.dtype)
        rounding = (q - v).abs_().mul_(inside).mean(dim=1, keepdim=True)
        ctx.grad_step = rounding - qmax * share_above + qmin * share_below
        ctx.grad_bits = step * math.log(2) * (qmin * share_below -
                                              (qmax + 1) * share_above)
        ctx.save_for_backward(inside if clipped else None)
        return q.clamp_(qmin, qmax).mul_(step)

    @staticmethod
    def backward(ctx, grad):
        (inside, ) = ctx.saved_tensors
        grad_x = grad * inside if inside is not None else grad
        return grad_x, ctx.grad_step, ctx.grad_bits, None, None


def a2q_codes(rows: Tensor, step: Tensor, bits: Tensor,
              signed: bool) -> Tensor:
    r"""The codes :math:`\mathrm{clamp}(\lfloor x_{if}/\alpha_i\rceil,
    q_{min}(b_i), q_{max}(b_i))` of :obj:`rows` :math:`(N, F)`, as floats,
    computed exactly as :func:`a2q_fake_quantize` computes them."""
    qmin, qmax = code_range(bits, signed)
    return torch.round(rows / step).clamp_(qmin, qmax)


def assign_nearest(step: Tensor, bits: Tensor, signed: bool,
                   rows: Tensor) -> Tensor:
    r"""A²Q's nearest-neighbour rule: for each row of :obj:`rows`
    :math:`(N, F)`, the index of the pair whose largest representable value
    :math:`\alpha_j 2^{b_j-1}` (:math:`\alpha_j (2^{b_j}-1)` unsigned) is
    nearest to :math:`\max_f |x_{if}|`; :obj:`step` and integer-valued
    :obj:`bits` have one entry per pair."""
    reach = step * (torch.exp2(bits - 1) if signed else torch.exp2(bits) - 1)
    ordered, order = reach.sort()
    peak = rows.abs().amax(dim=1).to(ordered.dtype)
    upper = torch.searchsorted(ordered, peak)
    upper = upper.clamp(max=ordered.numel() - 1)
    lower = (upper - 1).clamp(min=0)
    nearer_lower = ((peak - ordered[lower]).abs() <=
                    (peak - ordered[upper]).abs())
    return order[torch.where(nearer_lower, lower, upper)]


def round_bits(bits: Tensor) -> Tensor:
    r"""Bit widths rounded to integers in :math:`[1, 8]`, with the
    straight-through gradient (the identity)."""
    return bits + (bits.detach().clamp(MIN_BITS, MAX_BITS).round() -
                   bits.detach())


def a2q_fake_quantize(x: Tensor, step: Tensor, bits: Tensor,
                      signed: bool = True, grad: str = 'clipped') -> Tensor:
    r"""Quantize and dequantize each row :math:`i` of :obj:`x` with its own
    step :math:`\alpha_i` and integer bit width :math:`b_i`.

    .. math::
        \hat{x}_{if} = \alpha_i\,\mathrm{clamp}(\lfloor x_{if}/\alpha_i\rceil,
        q_{min}(b_i), q_{max}(b_i))

    with :math:`[q_{min}, q_{max}] = [-2^{b-1}, 2^{b-1}-1]` (signed) or
    :math:`[0, 2^b-1]`. The gradients of :math:`\alpha_i` and :math:`b_i`
    are the *local gradients* of the row's own error
    :math:`E_i = \frac{1}{F}\sum_f |\hat{x}_{if} - x_{if}|` (bounds taken as
    differentiable functions of :math:`b_i`), not the task gradient.

    Args:
        x (torch.Tensor): Rows :math:`(N, F)`.
        step (torch.Tensor): Positive steps :math:`(N, 1)`.
        bits (torch.Tensor): Integer-valued bit widths :math:`(N, 1)`.
        signed (bool, optional): Signed codes. (default: :obj:`True`)
        grad (str, optional): Gradient of :obj:`x`: :obj:`"ste"` or
            :obj:`"clipped"` (zero where :obj:`x` saturates).
            (default: :obj:`"clipped"`)
    """
    if grad not in GRADS:
        raise ValueError(f"'grad' must be one of {GRADS} (got {grad!r})")
    return _A2QFakeQuantize.apply(x, step, bits, signed, grad == 'clipped')


def check_num_groups(num_groups: Optional[int]) -> Optional[int]:
    r"""Raises unless :obj:`num_groups` is :obj:`None` or a positive int."""
    if num_groups is not None and (isinstance(num_groups, bool) or
                                   not isinstance(num_groups, int)
                                   or num_groups < 1):
        raise ValueError(f"'num_groups' must be a positive int or None "
                         f"(got {num_groups!r})")
    return num_groups


class A2QQuantizer(Quantizer):
    r"""Per-node quantizer of `A²Q <https://arxiv.org/abs/2302.00193>`_ for
    node features: node :math:`i` has a learned step :math:`\alpha_i` and bit
    width :math:`b_i`, see :func:`a2q_fake_quantize`.

    .. math::
        \hat{\mathbf{x}}_i = \alpha_{g(i)}\,\mathrm{clamp}\big(\lfloor
        \mathbf{x}_i/\alpha_{g(i)}\rceil, q_{min}(\bar{b}_{g(i)}),
        q_{max}(\bar{b}_{g(i)})\big),\qquad
        \bar{b} = \mathrm{clamp}(\lfloor b\rceil, 1, 8)

    The rounding of :math:`b` has the straight-through gradient; training
    forward passes project :math:`b` into :math:`[1, 8]`. The step is
    learned as its logarithm (:obj:`log_step`; :obj:`step` is its
    exponential): the features of a hub and of a leaf differ by orders of
    magnitude, and an optimizer like Adam, whose updates have the size of
    its learning rate, then changes every node's step by the same
    *relative* amount and never drives one to zero. The parameters are created on first use: one pair per row of
    that input (per node of the training graph), :math:`\alpha_i` covering
    :math:`\max_f |x_{if}|` at :obj:`init_bits` bits. The pair of row
    :math:`i` is :math:`g(i) = i` on a graph with that many nodes; on any
    other graph, and always with :obj:`num_groups`, :math:`g(i)` is the pair
    whose largest representable value :math:`\alpha_j 2^{\bar{b}_j-1}`
    (:math:`\alpha_j (2^{\bar{b}_j}-1)` unsigned) is nearest to
    :math:`\max_f |x_{if}|` (:meth:`assign`). Training through that rule
    updates the chosen pairs.

    Args:
        init_bits (int, optional): Initial bit width. (default: :obj:`4`)
        num_groups (int, optional): A fixed pool of parameter pairs shared
            by all graphs through the nearest-neighbour rule (graph
            classification); initialized on the quantiles of the first
            input's row maxima. :obj:`None` gives one pair per node of the
            first input. (default: :obj:`None`)
        signed (bool, optional): Signed codes; :obj:`None` decides on first
            use: unsigned if that input has no negative value (features after
            a ReLU), which gains one bit of resolution. (default: :obj:`None`)
        grad (str, optional): Gradient of the input, :obj:`"ste"` or
            :obj:`"clipped"`. (default: :obj:`"clipped"`)

    Shapes:
        - **input:** :math:`(N, *)`, one row per node
        - **output:** :math:`(N, *)`
    """
    _lazy_state = ('log_step', 'bit_width', 'is_signed', 'row_size')

    def __init__(self, init_bits: int = 4, num_groups: Optional[int] = None,
                 signed: Optional[bool] = None, grad: str = 'clipped'):
        super().__init__()
        self.init_bits = check_bits(init_bits)
        check_num_groups(num_groups)
        if grad not in GRADS:
            raise ValueError(f"'grad' must be one of {GRADS} (got {grad!r})")
        self.num_groups = num_groups
        self.signed = signed
        self.grad = grad
        self.log_step = nn.Parameter(torch.empty(0))
        self.bit_width = nn.Parameter(torch.empty(0))
        self.register_buffer('is_signed', torch.empty(0, dtype=torch.bool))
        self.register_buffer('row_size', torch.empty(0, dtype=torch.long))
        self._last_index: Optional[Tensor] = None
        self._has_run = False

    def reset_parameters(self):
        self.log_step.data = self.log_step.data.new_empty(0)
        self.bit_width.data = self.bit_width.data.new_empty(0)
        self.is_signed = self.is_signed.new_empty(0)
        self.row_size = self.row_size.new_empty(0)
        self._last_index, self._has_run = None, False

    @property
    def initialized(self) -> bool:
        return self.log_step.numel() > 0

    @property
    def step(self) -> Tensor:
        r"""The step of every parameter pair :math:`(G)`, the exponential
        of :obj:`log_step`."""
        return self.log_step.exp()

    @property
    def bits(self) -> Union[int, str]:
        r"""The bit widths in use, for display: an int if all are equal,
        else :obj:`"low..high"`."""
        if not self.initialized:
            return self.init_bits
        low, high = self.rounded_bits().aminmax()
        return int(low) if low == high else f'{int(low)}..{int(high)}'

    def rounded_bits(self) -> Tensor:
        r"""The integer bit width of every parameter pair, :math:`(G)`, with
        the straight-through gradient."""
        return round_bits(self.bit_width)

    def _reach(self, bits: Tensor) -> Tensor:
        if bool(self.is_signed):
            return torch.exp2(bits - 1)
        return torch.exp2(bits) - 1

    @torch.no_grad()
    def _initialize(self, rows: Tensor):
        signed = bool((rows < 0).any()) if self.signed is None else self.signed
        self.is_signed = torch.tensor([signed], device=rows.device)
        peak = rows.abs().amax(dim=1).float()
        if self.num_groups is not None:
            if peak.numel() > 1 << 20:  # torch.quantile's input limit
                peak = peak[torch.randint(peak.numel(), (1 << 20, ),
                                          device=peak.device)]
            levels = (torch.arange(self.num_groups, device=rows.device) +
                      0.5) / self.num_groups
            peak = torch.quantile(peak, levels)
        bits = torch.full_like(peak, float(self.init_bits))
        eps = torch.finfo(rows.dtype).eps  # an all-zero row: a finite log
        step = (peak / self._reach(bits)).clamp(min=eps)
        self.log_step.data = step.to(rows.dtype).log()
        self.bit_width.data = bits.to(rows.dtype)
        self.row_size = torch.tensor([rows.size(1)], device=rows.device)

    @torch.no_grad()
    def assign(self, x: Tensor) -> Optional[Tensor]:
        r"""The parameter pair of each row of :obj:`x`: :obj:`None` when row
        :math:`i` takes pair :math:`i`, else the nearest-neighbour choice
        :math:`(N)`."""
        rows = x.reshape(x.size(0), -1)
        if (self.num_groups is None
                and rows.size(0) == self.log_step.numel()):
            return None
        return assign_nearest(self.step, self.rounded_bits(),
                              bool(self.is_signed), rows)

    def _check_input(self, x: Tensor):
        check_floating(x, 'x')
        if x.dim() == 0:
            raise ValueError("'x' must have one row per node (got a scalar)")

    def _row_params(self, index: Optional[Tensor]):
        step, bits = self.step, self.rounded_bits()
        if index is not None:
            step, bits = step[index], bits[index]
        return step.view(-1, 1), bits.view(-1, 1)

    def forward(self, x: Tensor) -> Tensor:
        if not self.fake_quant_enabled or x.numel() == 0:
            return x
        self._check_input(x)
        rows = x.reshape(x.size(0), -1)
        if not self.initialized:
            self._initialize(rows)
        if self.training:  # projection, outside autograd
            self.bit_width.data.clamp_(MIN_BITS, MAX_BITS)
        index = self.assign(rows)
        self._last_index, self._has_run = index, True
        step, bits = self._row_params(index)
        out = a2q_fake_quantize(rows, step, bits, bool(self.is_signed),
                                self.grad)
        return out.view_as(x)

    @torch.no_grad()
    def quantize(self, x: Tensor) -> Tensor:
        r"""Integer codes of :obj:`x` (:obj:`torch.int8` if signed, else
        :obj:`torch.uint8`), each row on its own grid."""
        self._check_input(x)
        if not self.initialized:
            raise RuntimeError('the quantizer has no parameters yet: call it '
                               'on data first')
        rows = x.reshape(x.size(0), -1)
        step, bits = self._row_params(self.assign(rows))
        codes = a2q_codes(rows, step, bits, bool(self.is_signed))
        dtype = torch.int8 if bool(self.is_signed) else torch.uint8
        return codes.to(dtype).view(x.shape)

    @torch.no_grad()
    def dequantize(self, codes: Tensor,
                   index: Optional[Tensor] = None) -> Tensor:
        r"""Floats :math:`\alpha_{g(i)} q_i` of integer :obj:`codes`;
        :obj:`index` is :math:`g`, from :meth:`assign` on the input, unless
        row :math:`i` takes pair :math:`i`."""
        if codes.is_floating_point() or codes.is_complex():
            raise TypeError(f"'codes' must be an integer tensor "
                            f"(got dtype {codes.dtype})")
        if index is None and codes.size(0) != self.log_step.numel():
            raise ValueError(f"'codes' has {codes.size(0)} rows but the "
                             f"quantizer {self.log_step.numel()} parameter "
                             f"pairs: "
                             f"pass 'index' from assign() on the input")
        step, _ = self._row_params(index)
        rows = codes.reshape(codes.size(0), -1).to(step.dtype) * step
        return rows.view(codes.shape)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,
                              missing_keys, unexpected_keys, error_msgs):
        expected = self.num_groups or (self.log_step.numel() or None)
        for name in ('log_step', 'bit_width'):
            value = state_dict.get(prefix + name)
            if (isinstance(value, Tensor) and value.numel()
                    and expected is not None
                    and tuple(value.shape) != (expected, )):
                what = ('groups' if self.num_groups else
                        'nodes of the graph it was built on')
                error_msgs.append(
                    f"A2Q state '{prefix + name}' has {value.numel()} entries "
                    f"in the checkpoint but the model expects {expected} "
                    f"({what}): build the model with the same 'num_groups' "
                    f"and graph")
                return
        super()._load_from_state_dict(state_dict, prefix, local_metadata,
                                      strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def extra_repr(self) -> str:
        groups = f', num_groups={self.num_groups}' if self.num_groups else ''
        return (f'bits={self.bits!r}, init_bits={self.init_bits}{groups}, '
                f'grad={self.grad!r}')


def check_target_bits(target_avg_bits: float) -> float:
    r"""Raises unless :obj:`target_avg_bits` is a number in :math:`[1, 8]`."""
    if isinstance(target_avg_bits, bool) or not isinstance(
            target_avg_bits, numbers.Real):
        raise TypeError(f"'target_avg_bits' must be a number in "
                        f"[{MIN_BITS}, {MAX_BITS}] (got {target_avg_bits!r})")
    if not MIN_BITS <= target_avg_bits <= MAX_BITS:
        raise ValueError(f"'target_avg_bits' must be in [{MIN_BITS}, "
                         f"{MAX_BITS}] (got {target_avg_bits})")
    return target_avg_bits


def _usage(quantizers: Iterable[A2QQuantizer], last_pass: bool = True):
    r"""Sums over the bit widths used in the last forward pass (or over every
    parameter pair): :math:`\sum_l d_l \sum_i b^l_i`,
    :math:`\sum_l d_l N_l` and :math:`\sum_l N_l`."""
    total, weight, nodes = None, 0, 0
    for quantizer in quantizers:
        if not quantizer.initialized or (last_pass and
                                         not quantizer._has_run):
            continue
        bits, index = quantizer.rounded_bits(), quantizer._last_index
        used = bits if index is None or not last_pass else bits[index]
        size = int(quantizer.row_size)
        part = used.sum() * size
        total = part if total is None else total + part
        weight += used.numel() * size
        nodes += used.numel()
    if total is None:
        raise RuntimeError('no A2Q quantizer has run: call the model on data '
                           'before computing its average bit width')
    return total, weight, nodes


def average_bits(quantizers: Iterable[A2QQuantizer],
                 last_pass: bool = True) -> Tensor:
    r"""The mean bit width of the node features :obj:`quantizers` handled in
    their last forward pass (or, with :obj:`last_pass=False`, of all their
    parameter pairs), each node weighted by its feature count :math:`d_l`
    (so proportional to memory),
    :math:`\bar{b} = \sum_l d_l \sum_i b^l_i / \sum_l d_l N_l`, with the
    straight-through gradient to every bit width used."""
    total, weight, _ = _usage(quantizers, last_pass)
    return total / weight


def memory_penalty(quantizers: Iterable[A2QQuantizer], target_avg_bits: float,
                   weight: float = 0.1) -> Tensor:
    r"""A²Q's memory penalty on the last forward pass,

    .. math::
        \mathcal{L}_{mem} = \lambda\,N\,(\bar{b} - b_{target})^2

    with :math:`\bar{b}` from :func:`average_bits` over :math:`N` node bit
    widths. The paper penalizes the squared distance of the feature memory
    :math:`\sum_l d_l \sum_i b^l_i` to a budget; the factor :math:`N` keeps
    the pull on each node's bit width,
    :math:`2\lambda(\bar{b} - b_{target})\,d_l/\bar{d}`, independent of
    the graph size.
    """
    check_target_bits(target_avg_bits)
    total, size, nodes = _usage(quantizers)
    return weight * nodes * (total / size - target_avg_bits) ** 2
