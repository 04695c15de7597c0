from typing import Optional

import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn.dense.linear import Linear

from pyg_qgnn.nn.quant_layer import QuantLayer
from pyg_qgnn.quantizers import Quantizer


class QuantLinear(QuantLayer, Linear):
    r"""A :class:`torch_geometric.nn.Linear` (and :class:`torch.nn.Linear`)
    layer with quantized input, weight and output, trained with fake
    quantization (`Jacob et al., 2018 <https://arxiv.org/abs/1712.05877>`_).

    .. math::
        \mathbf{y} = Q_{out}\big(Q_{in}(\mathbf{x})\,
        Q_{w}(\mathbf{W})^{\top} + \mathbf{b}\big)

    The bias stays in floating point. With no quantizers this is exactly
    :class:`torch_geometric.nn.Linear`, with the same state-dict keys.

    Args:
        in_channels (int): Size of each input sample, or :obj:`-1` for lazy
            initialization.
        out_channels (int): Size of each output sample.
        bias (bool, optional): Learn an additive bias. (default: :obj:`True`)
        weight_initializer (str, optional): See
            :class:`torch_geometric.nn.Linear`. (default: :obj:`None`)
        bias_initializer (str, optional): See
            :class:`torch_geometric.nn.Linear`. (default: :obj:`None`)
        input_quantizer (Quantizer, optional): :math:`Q_{in}`.
            (default: :obj:`None`)
        weight_quantizer (Quantizer, optional): :math:`Q_{w}`.
            (default: :obj:`None`)
        output_quantizer (Quantizer, optional): :math:`Q_{out}`.
            (default: :obj:`None`)

    Shapes:
        - **input:** :math:`(*, F_{in})`
        - **output:** :math:`(*, F_{out})`
    """
    quant_points = ('input', 'weight', 'output')

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True,
                 weight_initializer: Optional[str] = None,
                 bias_initializer: Optional[str] = None, *,
                 input_quantizer: Optional[Quantizer] = None,
                 weight_quantizer: Optional[Quantizer] = None,
                 output_quantizer: Optional[Quantizer] = None):
        super().__init__(in_channels, out_channels, bias, weight_initializer,
                         bias_initializer)
        self._init_quantizers(dict(input=input_quantizer,
                                   weight=weight_quantizer,
                                   output=output_quantizer))

    def reset_parameters(self):
        super().reset_parameters()
        self.reset_quantizers()

    def forward(self, x: Tensor) -> Tensor:
        x = self.quant('input', x)
        out = F.linear(x, self.quant('weight', self.weight), self.bias)
        return self.quant('output', out)

    @classmethod
    def float_kwargs(cls, module: nn.Module) -> dict:
        if isinstance(module, Linear):
            return dict(in_channels=module.in_channels,
                        out_channels=module.out_channels,
                        bias=module.bias is not None,
                        weight_initializer=module.weight_initializer,
                        bias_initializer=module.bias_initializer)
        return dict(in_channels=module.in_features,
                    out_channels=module.out_features,
                    bias=module.bias is not None)

    def __repr__(self) -> str:
        extra = self.quant_repr()
        return (f'{self.__class__.__name__}({self.in_channels}, '
                f'{self.out_channels}, bias={self.bias is not None}'
                f'{", " + extra if extra else ""})')
