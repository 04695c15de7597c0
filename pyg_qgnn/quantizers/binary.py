r"""Binarization of `Bahri et al., 2021 <https://arxiv.org/abs/2012.15823>`_:
sign with the clipped straight-through gradient (Eq. 8), optional balance
functions before it (§5), the learned XNOR-Net++ rescaling :math:`\Gamma`
(Eq. 9–11), latent-weight centring and clipping, and the stage switch of
cascaded distillation.

A training loop for binary weights calls :func:`clip_latent_weights_` after
every optimiser step, or registers it once:

.. code-block:: python

    from pyg_qgnn.quantizers import register_latent_weight_clipping

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    register_latent_weight_clipping(optimizer, model)  # after each step()
"""
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from pyg_qgnn.quantizers.base import Quantizer
from pyg_qgnn.quantizers.functional import check_floating, ste_sign
from pyg_qgnn.quantizers.packing import pack_bits, unpack_bits

BALANCES = ('mean', 'median')
RELAXATIONS = ('tanh', None)
STAGES = (0, 1, 2, 3)


def check_finite_input(x: Tensor, name: str = 'x') -> Tensor:
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"'{name}' contains NaN or Inf values; expected "
                         f"finite features")
    return x


def balance(x: Tensor, method: str, dim: int = 0) -> Tensor:
    r"""Re-centres :obj:`x` along :obj:`dim` before binarization (§5,
    "balance functions"): :math:`x - \mathrm{mean}(x)` for
    :obj:`"mean"`, :math:`x - \mathrm{median}(x)` for :obj:`"median"`, which
    leaves as many values on each side of zero."""
    if method == 'mean':
        return x - x.mean(dim, keepdim=True)
    if method == 'median':
        return x - x.median(dim, keepdim=True).values
    raise ValueError(f"'balance' must be one of {BALANCES} or None "
                     f"(got {method!r})")


def check_signs(codes: Tensor, name: str = 'codes') -> Tensor:
    if codes.is_complex() or codes.dtype == torch.bool:
        raise TypeError(f"'{name}' must be a real tensor of -1/+1 values "
                        f"(got dtype {codes.dtype})")
    if codes.numel() and not bool(((codes == 1) | (codes == -1)).all()):
        raise ValueError(f"'{name}' must hold only -1 and +1 values")
    return codes


def pack_signs(codes: Tensor) -> Tensor:
    r"""Packs :math:`\pm 1` values (any real dtype) along the last dimension,
    8 per byte (:math:`+1 \mapsto 1`, :math:`-1 \mapsto 0`, the first value
    in the lowest bit, padding bits zero), through
    :func:`~pyg_qgnn.quantizers.pack_bits`. With this layout
    :math:`-x_i \odot x_j` packs to the XOR of the packed :math:`x_i` and
    :math:`x_j`.

    Returns:
        :obj:`uint8` tensor of shape :math:`(*, \lceil L/8\rceil)`.
    """
    check_signs(codes)
    return pack_bits((codes > 0).to(torch.uint8), 1)


def unpack_signs(packed: Tensor, length: int) -> Tensor:
    r"""Inverse of :func:`pack_signs`: :obj:`torch.int8` codes in
    :math:`\{-1, +1\}` of shape :math:`(*, L)`."""
    bits = unpack_bits(packed, 1, length)
    return bits.to(torch.int8) * 2 - 1


class SignQuantizer(Quantizer):
    r"""Binarization :math:`\mathrm{sign}(x) \in \{-1, +1\}` (:math:`+1` at
    :math:`0`, Eq. 8) with the clipped straight-through gradient
    :math:`\mathbb{1}_{|x| \le 1}`, see :func:`~pyg_qgnn.quantizers.ste_sign`.

    .. math::
        \hat{x} = \mathrm{sign}\big(b(x)\big)

    with :math:`b` an optional balance function (:func:`balance`). Codes are
    :obj:`torch.int8` :math:`\pm 1`; :meth:`pack` stores them as 1 bit each.

    Besides the on/off switch of every quantizer
    (:func:`~pyg_qgnn.quantizers.disable_fake_quant`), :attr:`relaxed`
    selects the differentiable stand-in of stage 1 of cascaded distillation
    (:func:`set_binarization_stage`): :math:`\tanh(b(x))`, or :math:`b(x)`
    for :obj:`relaxation=None` (for inputs that an earlier layer already
    relaxed).

    Args:
        balance (str, optional): :obj:`"mean"` or :obj:`"median"` centring
            before the sign, or :obj:`None`. Centring uses the statistics of
            the current input, in training and evaluation alike.
            (default: :obj:`None`)
        balance_dim (int, optional): The dimension centred over (:obj:`0`:
            over nodes, per channel). (default: :obj:`0`)
        relaxation (str, optional): :obj:`"tanh"` or :obj:`None`, used while
            :attr:`relaxed`. (default: :obj:`"tanh"`)

    Shapes:
        - **input:** any :math:`(*)` floating-point tensor
        - **output:** :math:`(*)`, same dtype
    """
    bits = 1

    def __init__(self, balance: Optional[str] = None, balance_dim: int = 0,
                 relaxation: Optional[str] = 'tanh'):
        super().__init__()
        if balance is not None and balance not in BALANCES:
            raise ValueError(f"'balance' must be one of {BALANCES} or None "
                             f"(got {balance!r})")
        if relaxation not in RELAXATIONS:
            raise ValueError(f"'relaxation' must be one of {RELAXATIONS} "
                             f"(got {relaxation!r})")
        self.balance = balance
        self.balance_dim = balance_dim
        self.relaxation = relaxation
        self.relaxed = False

    def reset_parameters(self):
        pass  # stateless

    @property
    def binarizing(self) -> bool:
        r"""Whether :meth:`forward` outputs exact :math:`\pm 1` values."""
        return self.fake_quant_enabled and not self.relaxed

    def _balanced(self, x: Tensor) -> Tensor:
        check_finite_input(check_floating(x))
        if self.balance is None or x.numel() == 0:
            return x
        return balance(x, self.balance, self.balance_dim)

    def forward(self, x: Tensor) -> Tensor:
        if not self.fake_quant_enabled:
            return x
        x = self._balanced(x)
        if self.relaxed:
            return torch.tanh(x) if self.relaxation == 'tanh' else x
        return ste_sign(x)

    @torch.no_grad()
    def quantize(self, x: Tensor) -> Tensor:
        r""":obj:`torch.int8` codes :math:`\pm 1` of :obj:`x`."""
        x = self._balanced(x)
        return torch.where(x >= 0, 1, -1).to(torch.int8)

    @torch.no_grad()
    def dequantize(self, codes: Tensor,
                   dtype: torch.dtype = torch.float32) -> Tensor:
        r"""Floats :math:`\pm 1` of :math:`\pm 1` :obj:`codes`."""
        return check_signs(codes).to(dtype)

    @torch.no_grad()
    def pack(self, x: Tensor) -> Tensor:
        r"""The codes of :obj:`x` packed 8 per byte along the last dimension
        (:func:`pack_signs`)."""
        return pack_signs(self.quantize(x))

    def __repr__(self) -> str:
        extra = f', balance={self.balance!r}' if self.balance else ''
        if self.relaxation != 'tanh':
            extra += f', relaxation={self.relaxation!r}'
        return f'{self.__class__.__name__}(bits=1{extra})'


def rescale(x: Tensor, alpha: Tensor,
            factors: Sequence[Tensor] = ()) -> Tensor:
    r"""Multiplies :obj:`x` of shape :math:`(*, m_1, \ldots, m_r, o)` by the
    rank-1 tensor :math:`\Gamma = f_1 \otimes \cdots \otimes f_r \otimes
    \alpha` (Eq. 11; Eq. 10 for :math:`r = 0`)."""
    gamma = alpha
    for factor in reversed(factors):
        gamma = factor.reshape(factor.shape + (1, ) * gamma.dim()) * gamma
    return x * gamma


class LearnedRescale(nn.Module):
    r"""The learned rescaling :math:`\Gamma` of XNOR-Net++ (`Bulat and
    Tzimiropoulos, 2019 <https://arxiv.org/abs/1909.13863>`_) that multiplies
    a binary dot product (Eq. 9):

    .. math::
        \mathbf{A} \star \mathbf{B} \approx \big(\mathrm{sign}(\mathbf{A})
        \circledast \mathrm{sign}(\mathbf{B})\big) \odot \Gamma

    channel-wise, :math:`\Gamma = \alpha \in \mathbb{R}^{o}` (Eq. 10), or one
    rank-1 factor per mode, :math:`\Gamma = \beta \otimes \gamma \otimes
    \alpha` (Eq. 11), for outputs of shape :math:`(*, h, w, o)`. All factors
    start at one.

    Args:
        channels (int): The number of output channels :math:`o`.
        modes (Sequence[int], optional): Sizes :math:`(h, w, \ldots)` of the
            dimensions before the channels that get a factor each; empty for
            channel-wise rescaling. (default: :obj:`()`)

    Shapes:
        - **input:** :math:`(*, h, w, \ldots, o)`
        - **output:** same
    """
    def __init__(self, channels: int, modes: Sequence[int] = ()):
        super().__init__()
        sizes = (channels, ) + tuple(modes)
        if any(isinstance(s, bool) or not isinstance(s, int) or s < 1
               for s in sizes):
            raise ValueError(f"'channels' and 'modes' must be positive ints "
                             f"(got {channels!r} and {tuple(modes)!r})")
        self.channels = channels
        self.modes = tuple(modes)
        self.alpha = nn.Parameter(torch.ones(channels))
        self.factors = nn.ParameterList(
            [nn.Parameter(torch.ones(size)) for size in self.modes])

    def reset_parameters(self):
        for param in self.parameters():
            nn.init.ones_(param)

    @property
    def gamma(self) -> Tensor:
        r""":math:`\Gamma` of shape :math:`(h, w, \ldots, o)`."""
        return rescale(torch.ones(self.modes + (self.channels, ),
                                  dtype=self.alpha.dtype,
                                  device=self.alpha.device),
                       self.alpha, list(self.factors))

    def forward(self, x: Tensor) -> Tensor:
        trailing = tuple(x.shape[x.dim() - len(self.modes) - 1:])
        if x.dim() <= len(self.modes) or trailing != self.modes + (
                self.channels, ):
            raise ValueError(f"'x' must end with dimensions "
                             f"{self.modes + (self.channels, )} "
                             f"(got shape {tuple(x.shape)})")
        return rescale(x, self.alpha, list(self.factors))

    def __repr__(self) -> str:
        modes = f', modes={self.modes}' if self.modes else ''
        return f'{self.__class__.__name__}({self.channels}{modes})'


# Latent weights ##############################################################


@torch.no_grad()
def center_and_clip_(weight: Tensor) -> Tensor:
    r"""In place: centres each output row of a latent binary weight on its
    mean and clips it to :math:`[-1, 1]` (§3: "we mean-center and clip the
    real latent network weights after their update"). Outside
    :math:`[-1, 1]` the clipped straight-through gradient is zero, so
    unclipped latent weights would stop learning."""
    if weight.dim() > 1:
        dims = tuple(range(1, weight.dim()))
        weight.sub_(weight.mean(dim=dims, keepdim=True))
    return weight.clamp_(-1.0, 1.0)


def latent_binary_weights(model: nn.Module) -> list:
    r"""The latent weights that :obj:`model` currently binarizes: the
    :obj:`weight` of every module whose :obj:`weight_quantizer` is a
    binarizing :class:`SignQuantizer`."""
    found = []
    for module in model.modules():
        quantizer = getattr(module, 'weight_quantizer', None)
        weight = getattr(module, 'weight', None)
        if (isinstance(quantizer, SignQuantizer) and quantizer.binarizing
                and isinstance(weight, nn.Parameter)):
            found.append(weight)
    return found


def clip_latent_weights_(model: nn.Module) -> nn.Module:
    r"""Applies :func:`center_and_clip_` to every weight :obj:`model`
    binarizes (:func:`latent_binary_weights`); call it after each optimiser
    step. Real-valued weights (stages 1–2 of cascaded distillation, the real last
    layer) are left alone."""
    for weight in latent_binary_weights(model):
        center_and_clip_(weight)
    return model


def register_latent_weight_clipping(optimizer: torch.optim.Optimizer,
                                    model: nn.Module):
    r"""Runs :func:`clip_latent_weights_` on :obj:`model` after every
    :obj:`optimizer.step()`. Returns the hook handle
    (:obj:`handle.remove()` undoes it)."""
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"'optimizer' must be a torch.optim.Optimizer "
                        f"(got {type(optimizer).__name__})")
    return optimizer.register_step_post_hook(
        lambda *_: clip_latent_weights_(model))


# Cascaded distillation stages ###############################################


def set_binarization_stage(model: nn.Module, stage: int) -> nn.Module:
    r"""Sets every :class:`SignQuantizer` of :obj:`model` to a stage of the
    cascaded distillation of Bahri et al. (§3, "Multi-stage training"):

    =====  ====================  ==================
    stage  activations / inputs  weights
    =====  ====================  ==================
    0      real (quantizers off) real
    1      :math:`\tanh` relaxed real
    2      binary                real
    3      binary                binary
    =====  ====================  ==================

    A quantizer counts as a weight quantizer when it is the
    :obj:`weight_quantizer` of a module that has a :obj:`weight`. Returns
    :obj:`model`.
    """
    if stage not in STAGES:
        raise ValueError(f"'stage' must be one of {STAGES} (got {stage!r})")
    weight_quantizers = {
        id(module.weight_quantizer)
        for module in model.modules()
        if isinstance(getattr(module, 'weight_quantizer', None), SignQuantizer)
        and isinstance(getattr(module, 'weight', None), Tensor)
    }
    for module in model.modules():
        if not isinstance(module, SignQuantizer):
            continue
        if id(module) in weight_quantizers:
            module.fake_quant_enabled, module.relaxed = stage == 3, False
        else:
            module.fake_quant_enabled = stage >= 1
            module.relaxed = stage == 1
    return model
