from typing import Optional, Sequence, Union

import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn.dense.linear import Linear

from pyg_qgnn.nn.quant_layer import QuantLayer
from pyg_qgnn.quantizers import Quantizer
from pyg_qgnn.quantizers.binary import LearnedRescale, SignQuantizer

ACTIVATIONS = ('prelu', 'relu', None)
QuantizerArg = Union[Quantizer, str, None]


def make_sign_quantizer(quantizer: QuantizerArg, name: str,
                        **kwargs) -> Optional[Quantizer]:
    r"""Resolves a quantizer argument of the binary layers: :obj:`"sign"`
    builds a fresh :class:`SignQuantizer` (with :obj:`kwargs`), :obj:`None`
    keeps the point real, and a :class:`Quantizer` is used as given."""
    if isinstance(quantizer, str):
        if quantizer != 'sign':
            raise ValueError(f"'{name}' must be 'sign', a Quantizer or None "
                             f"(got {quantizer!r})")
        return SignQuantizer(**kwargs)
    return quantizer


class BinLinear(QuantLayer, Linear):
    r"""The XNOR-Net++ block (`Bulat and Tzimiropoulos, 2019
    <https://arxiv.org/abs/1909.13863>`_) as used by binary GNNs (`Bahri et
    al., 2021 <https://arxiv.org/abs/2012.15823>`_): batch normalization
    before the sign, binary weights, a learned rescaling :math:`\Gamma` and
    an optional PReLU.

    .. math::
        \mathbf{y} = \sigma\Big(\big(\mathrm{sign}(\mathbf{W}) \circledast
        \mathrm{sign}(\mathrm{BN}(\mathbf{x}))\big) \odot \Gamma
        + \mathbf{b}\Big)

    The sign is a :class:`~pyg_qgnn.quantizers.SignQuantizer` at the
    :obj:`input` and :obj:`weight` points; with both off
    (:func:`~pyg_qgnn.quantizers.disable_fake_quant`) this is the real block
    :math:`\sigma(\mathbf{W}\,\mathrm{BN}(\mathbf{x}) \odot \Gamma +
    \mathbf{b})`, and without :obj:`batch_norm` and :obj:`activation` it is
    exactly :class:`torch_geometric.nn.Linear` (:math:`\Gamma` starts at one),
    whose state-dict keys it extends.

    Args:
        in_channels (int): Size of each input sample.
        out_channels (int): Size of each output sample.
        bias (bool, optional): Learn an additive bias. (default: :obj:`True`)
        weight_initializer (str, optional): See
            :class:`torch_geometric.nn.Linear`. (default: :obj:`None`)
        bias_initializer (str, optional): See
            :class:`torch_geometric.nn.Linear`. (default: :obj:`None`)
        batch_norm (bool, optional): Batch normalization of the input before
            its quantizer. (default: :obj:`True`)
        activation (str, optional): :math:`\sigma`: :obj:`"prelu"` (one
            learned slope), :obj:`"relu"` or :obj:`None`.
            (default: :obj:`"prelu"`)
        rescale_modes (Sequence[int], optional): Sizes of the input
            dimensions before the channels that get their own rank-1 factor of
            :math:`\Gamma` (Eq. 11), e.g. :obj:`(num_points, k)` for dense
            :math:`(B, N, k, F)` inputs; empty for a channel-wise
            :math:`\Gamma` (Eq. 10). (default: :obj:`()`)
        input_quantizer (Quantizer or str, optional): Binarization of the
            (normalized) input: :obj:`"sign"` for a fresh
            :class:`SignQuantizer`, a quantizer, or :obj:`None` for real
            inputs. (default: :obj:`"sign"`)
        weight_quantizer (Quantizer or str, optional): Binarization of the
            weight, likewise; :obj:`None` keeps it real (as for the last layer
            of a classifier). (default: :obj:`"sign"`)

    Shapes:
        - **input:** :math:`(*, F_{in})`
        - **output:** :math:`(*, F_{out})`
    """
    quant_points = ('input', 'weight')

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True,
                 weight_initializer: Optional[str] = None,
                 bias_initializer: Optional[str] = None, *,
                 batch_norm: bool = True, activation: Optional[str] = 'prelu',
                 rescale_modes: Sequence[int] = (),
                 input_quantizer: QuantizerArg = 'sign',
                 weight_quantizer: QuantizerArg = 'sign'):
        if in_channels < 1:
            raise ValueError(f"'in_channels' must be a positive int "
                             f"(got {in_channels}); BinLinear has no lazy "
                             f"initialization")
        if activation not in ACTIVATIONS:
            raise ValueError(f"'activation' must be one of {ACTIVATIONS} "
                             f"(got {activation!r})")
        super().__init__(in_channels, out_channels, bias, weight_initializer,
                         bias_initializer)
        self.norm = nn.BatchNorm1d(in_channels) if batch_norm else None
        self.rescale = LearnedRescale(out_channels, rescale_modes)
        self.activation = nn.PReLU() if activation == 'prelu' else (
            nn.ReLU() if activation == 'relu' else None)
        self.activation_name = activation
        self._init_quantizers(dict(
            input=make_sign_quantizer(input_quantizer, 'input_quantizer'),
            weight=make_sign_quantizer(weight_quantizer, 'weight_quantizer')))

    def reset_parameters(self):
        super().reset_parameters()
        for module in (getattr(self, 'norm', None),
                       getattr(self, 'rescale', None),
                       getattr(self, 'activation', None)):
            if hasattr(module, 'reset_parameters'):
                module.reset_parameters()
        self.reset_quantizers()

    def normalize(self, x: Tensor) -> Tensor:
        r"""Batch normalization of the channels of :obj:`x` of shape
        :math:`(*, F_{in})`."""
        if self.norm is None:
            return x
        return self.norm(x.reshape(-1, x.size(-1))).reshape(x.shape)

    def forward(self, x: Tensor) -> Tensor:
        x = self.quant('input', self.normalize(x))
        out = self.rescale(F.linear(x, self.quant('weight', self.weight)))
        if self.bias is not None:
            out = out + self.bias
        return out if self.activation is None else self.activation(out)

    def __repr__(self) -> str:
        extra = self.quant_repr()
        extra += f', batch_norm={self.norm is not None}'
        extra += f', activation={self.activation_name!r}'
        if self.rescale.modes:
            extra += f', rescale_modes={self.rescale.modes}'
        return (f'{self.__class__.__name__}({self.in_channels}, '
                f'{self.out_channels}, bias={self.bias is not None}, '
                f'{extra.lstrip(", ")})')
