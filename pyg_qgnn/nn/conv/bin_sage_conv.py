from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn.aggr import (
    Aggregation,
    MaxAggregation,
    MeanAggregation,
    SumAggregation,
)
from torch_geometric.nn.conv import SAGEConv
from torch_geometric.typing import Adj, OptPairTensor, Size

from pyg_qgnn.nn.dense.bin_linear import (
    ACTIVATIONS,
    QuantizerArg,
    make_sign_quantizer,
)
from pyg_qgnn.nn.quant_layer import QuantLayer
from pyg_qgnn.quantizers import LearnedRescale, Quantizer

#: The aggregations of Eq. 14, by the names SAGEConv takes.
AGGREGATIONS = {'mean': 'mean', 'max': 'max', 'sum': 'sum', 'add': 'sum'}
_AGGREGATION_MODULES = {MeanAggregation: 'mean', MaxAggregation: 'max',
                        SumAggregation: 'sum'}


def aggregation_name(aggr) -> str:
    r"""The name (:obj:`"mean"`, :obj:`"max"` or :obj:`"sum"`) of a
    GraphSAGE aggregation given as a name or an aggregation module."""
    if isinstance(aggr, Aggregation):
        name = _AGGREGATION_MODULES.get(type(aggr))
    else:
        name = AGGREGATIONS.get(aggr) if isinstance(aggr, str) else None
    if name is None:
        raise ValueError(f"'aggr' must be one of {tuple(AGGREGATIONS)} "
                         f"(got {aggr!r}): Eq. 14 binarizes one aggregate "
                         f"per neighbourhood")
    return name


def make_activation(name: Optional[str]) -> Optional[nn.Module]:
    r"""The :math:`\sigma` of an XNOR-Net++ block: :obj:`"prelu"` (one
    learned slope), :obj:`"relu"` or :obj:`None`."""
    if name not in ACTIVATIONS:
        raise ValueError(f"'activation' must be one of {ACTIVATIONS} "
                         f"(got {name!r})")
    return nn.PReLU() if name == 'prelu' else (
        nn.ReLU() if name == 'relu' else None)


class BinSAGEConv(QuantLayer, SAGEConv):
    r"""The binary GraphSAGE operator of `Bahri et al., 2021
    <https://arxiv.org/abs/2012.15823>`_ (Eq. 14–15), a drop-in for
    :class:`~torch_geometric.nn.conv.SAGEConv`:

    .. math::
        \mathbf{h}_i &= \mathrm{sign}\Big(\mathrm{BN}\big(\big[
        \mathbf{x}_i \,\Vert\, \mathrm{aggr}_{j \in \mathcal{N}(i)}
        \mathbf{x}_j\big]\big)\Big)

        \mathbf{x}^{\prime}_i &= \mathrm{Norm}\Big(\sigma\big(
        (\mathrm{sign}(\mathbf{W}) \circledast \mathbf{h}_i) \odot \Gamma
        + \mathbf{b}\big)\Big)

    with :math:`\mathbf{W} = [\mathbf{W}_1 \,\Vert\, \mathbf{W}_2]`,
    :math:`\Gamma` a learned channel-wise rescaling (XNOR-Net++, Eq. 10),
    :math:`\sigma` a PReLU (optional) and :math:`\mathrm{Norm}` the
    optional :math:`\ell_2` normalization of :class:`SAGEConv`. The signs
    have the clipped straight-through gradient
    (:class:`~pyg_qgnn.quantizers.SignQuantizer`).

    One weight on the concatenation is the sum of :class:`SAGEConv`'s two,
    :math:`\mathbf{W}[\mathbf{x}_i \Vert \mathbf{a}_i] = \mathbf{W}_1
    \mathbf{x}_i + \mathbf{W}_2 \mathbf{a}_i`, so the latent weights are
    kept where :class:`SAGEConv` keeps them: :math:`\mathbf{W}_1` in
    :obj:`lin_r`, :math:`\mathbf{W}_2` and :math:`\mathbf{b}` in
    :obj:`lin_l` (:class:`~pyg_qgnn.nn.QuantLinear` twins, each holding a
    sign as weight quantizer). The state dict is :class:`SAGEConv`'s plus
    :obj:`norm.*`, :obj:`rescale.alpha` and :obj:`activation.weight`; a
    :class:`SAGEConv` state dict, which has none of those, loads with
    :obj:`strict=True` and leaves them as they are (:math:`\Gamma = 1`,
    fresh running statistics), and :meth:`from_float` builds the twin of a
    trained :class:`SAGEConv`. With the signs off
    (:func:`~pyg_qgnn.quantizers.disable_fake_quant`), without batch
    normalization and activation, the layer computes what :class:`SAGEConv`
    computes on the same weights (up to the order of floating-point sums).

    The layer's own output stays real, as in Eq. 15; an
    :obj:`output_quantizer` binarizes it, so that the next layer aggregates
    :math:`\pm 1` features (integers, in its deployed form,
    :class:`~pyg_qgnn.deploy.DeployedBinSAGEConv`).

    Args:
        in_channels (int or tuple): Size of each input sample, or the sizes
            of source and target features (no lazy :obj:`-1`: batch
            normalization needs the size).
        out_channels (int): Size of each output sample.
        aggr (str, optional): :obj:`"mean"`, :obj:`"max"` or :obj:`"sum"`
            (:obj:`"add"`). (default: :obj:`"mean"`)
        normalize (bool, optional): :math:`\ell_2`-normalize the output
            (Eq. 15's :math:`\mathrm{Norm}`). (default: :obj:`False`)
        root_weight (bool, optional): Include :math:`\mathbf{x}_i` in
            :math:`\mathbf{h}_i`; otherwise :math:`\mathbf{h}_i` is the
            binarized aggregate alone. (default: :obj:`True`)
        project (bool, optional): Project the neighbours first, as
            :class:`SAGEConv` does; the projection (not part of Eq. 14)
            stays real-valued. (default: :obj:`False`)
        bias (bool, optional): Learn the additive bias :math:`\mathbf{b}`.
            (default: :obj:`True`)
        batch_norm (bool, optional): The batch normalization of Eq. 14.
            (default: :obj:`True`)
        activation (str, optional): :math:`\sigma`: :obj:`"prelu"` (Eq.
            15), :obj:`"relu"` or :obj:`None` (the paper's OGB-Products
            model). (default: :obj:`"prelu"`)
        input_quantizer (Quantizer or str, optional): The sign of Eq. 14:
            :obj:`"sign"`, a quantizer, or :obj:`None` for real
            :math:`\mathbf{h}_i` (a first layer on raw features).
            (default: :obj:`"sign"`)
        weight_quantizer (Quantizer or str, optional): The sign of
            :math:`\mathbf{W}`, likewise; :obj:`None` keeps it real. Held by
            :obj:`lin_l`, a copy by :obj:`lin_r`. (default: :obj:`"sign"`)
        output_quantizer (Quantizer or str, optional): A sign on the
            output, or :obj:`None`. (default: :obj:`None`)
        **kwargs (optional): Additional arguments of
            :class:`torch_geometric.nn.conv.MessagePassing`.

    Shapes:
        - **inputs:**
          node features :math:`(|\mathcal{V}|, F_{in})` or
          :math:`((|\mathcal{V_s}|, F_{s}), (|\mathcal{V_t}|, F_{t}))`
          if bipartite,
          edge indices :math:`(2, |\mathcal{E}|)`
          or sparse matrix :math:`(|\mathcal{V_t}|, |\mathcal{V_s}|)`
        - **outputs:** node features :math:`(|\mathcal{V}|, F_{out})` or
          :math:`(|\mathcal{V_t}|, F_{out})` if bipartite
    """
    quant_points = ('input', 'weight', 'output')

    def __init__(
        self,
        in_channels: Union[int, Tuple[int, int]],
        out_channels: int,
        aggr: Optional[Union[str, Aggregation]] = 'mean',
        normalize: bool = False,
        root_weight: bool = True,
        project: bool = False,
        bias: bool = True,
        *,
        batch_norm: bool = True,
        activation: Optional[str] = 'prelu',
        input_quantizer: QuantizerArg = 'sign',
        weight_quantizer: QuantizerArg = 'sign',
        output_quantizer: QuantizerArg = None,
        **kwargs,
    ):
        aggregation_name(aggr)
        sizes = (in_channels, ) * 2 if isinstance(in_channels, int) else \
            tuple(in_channels)
        if len(sizes) != 2 or any(isinstance(s, bool) or not isinstance(
                s, int) or s < 1 for s in sizes + (out_channels, )):
            raise ValueError(f"'in_channels' must be a positive int or a pair "
                             f"of them and 'out_channels' a positive int (got "
                             f"{in_channels!r} and {out_channels!r}); "
                             f"BinSAGEConv has no lazy initialization")
        make_activation(activation)  # checked before any work
        super().__init__(in_channels, out_channels, aggr, normalize,
                         root_weight, project, bias, **kwargs)
        # Eq. 14's channels: [x_i || aggr_j x_j].
        self.h_channels = sizes[0] + (sizes[1] if root_weight else 0)
        self.norm = nn.BatchNorm1d(self.h_channels) if batch_norm else None
        self.rescale = LearnedRescale(out_channels)
        self.activation = make_activation(activation)
        self.activation_name = activation
        self._quantize_linears(['lin_l', 'lin_r'], make_sign_quantizer(
            weight_quantizer, 'weight_quantizer'))
        # A twin without quantizers: the projection stays real, also when
        # quantize_model() walks into this layer.
        self._quantize_linears(['lin'], None)
        self._init_quantizers(dict(
            input=make_sign_quantizer(input_quantizer, 'input_quantizer'),
            output=make_sign_quantizer(output_quantizer, 'output_quantizer')))
        self.register_load_state_dict_pre_hook(_keep_binary_parts)
        self.reset_parameters()

    @property
    def weight_quantizer(self) -> Optional[Quantizer]:
        # Held by self.lin_l, so that the latent weights are found
        # (clip_latent_weights_) and the state-dict keys stay SAGEConv's.
        return getattr(self.lin_l, 'weight_quantizer', None)

    def reset_parameters(self):
        super().reset_parameters()
        for module in (getattr(self, 'norm', None),
                       getattr(self, 'rescale', None),
                       getattr(self, 'activation', None)):
            if hasattr(module, 'reset_parameters'):
                module.reset_parameters()
        self.reset_quantizers()

    def forward(self, x: Union[Tensor, OptPairTensor], edge_index: Adj,
                size: Size = None) -> Tensor:
        if isinstance(x, Tensor):
            x = (x, x)
        if self.root_weight and x[1] is None:
            raise ValueError("'x' must hold target features, x=(x_src, "
                             "x_dst) with x_dst not None, when "
                             "root_weight=True: Eq. 14 normalizes [x_i || "
                             "aggr] together")
        if self.project:  # real-valued, see the class notes
            x = (self.lin(x[0]).relu(), x[1])
        aggregate = self.propagate(edge_index, x=x, size=size)
        h = torch.cat([x[1], aggregate], dim=-1) if self.root_weight \
            else aggregate
        h = self.quant('input', self.normalize_input(h))
        return self.finish(F.linear(h, self.binary_weight()))

    def normalize_input(self, h: Tensor) -> Tensor:
        r"""The batch normalization of Eq. 14, if any."""
        return h if self.norm is None else self.norm(h)

    def binary_weight(self) -> Tensor:
        r""":math:`\mathrm{sign}(\mathbf{W})`, :math:`\mathbf{W} =
        [\mathbf{W}_1 \,\Vert\, \mathbf{W}_2]` of shape :math:`(F_{out},
        F_t + F_s)` (:math:`(F_{out}, F_s)` without :obj:`root_weight`)."""
        weight = self.lin_l.quant('weight', self.lin_l.weight)
        if not self.root_weight:
            return weight
        return torch.cat([self.lin_r.quant('weight', self.lin_r.weight),
                          weight], dim=1)

    def finish(self, product: Tensor) -> Tensor:
        r"""Eq. 15 after the product: :math:`\Gamma`, bias, :math:`\sigma`,
        :math:`\mathrm{Norm}`, and the output sign, if any."""
        out = self.rescale(product)
        if self.lin_l.bias is not None:
            out = out + self.lin_l.bias
        if self.activation is not None:
            out = self.activation(out)
        if self.normalize:
            out = F.normalize(out, p=2., dim=-1)
        return self.quant('output', out)

    @classmethod
    def float_kwargs(cls, module: nn.Module) -> dict:
        kwargs = cls.message_passing_kwargs(module)
        kwargs['aggr'] = aggregation_name(module.aggr_module)
        return dict(in_channels=module.in_channels,
                    out_channels=module.out_channels,
                    normalize=module.normalize,
                    root_weight=module.root_weight, project=module.project,
                    bias=module.lin_l.bias is not None, **kwargs)

    @classmethod
    def from_float(cls, module: nn.Module, *, batch_norm: bool = True,
                   activation: Optional[str] = 'prelu',
                   **quantizers) -> 'BinSAGEConv':
        r"""The binary twin of the :class:`SAGEConv` :obj:`module`, its
        weights the latent weights, with :obj:`batch_norm`,
        :obj:`activation` and the quantizers given by point (keyword
        :obj:`input=...`, :obj:`weight=...`, :obj:`output=...`; points not
        given take the constructor's defaults)."""
        settings = {f'{point}_quantizer': quantizer
                    for point, quantizer in quantizers.items()}
        twin = cls(**cls.float_kwargs(module), batch_norm=batch_norm,
                   activation=activation, **settings)
        params = list(module.parameters()) + list(module.buffers())
        if params:
            twin = twin.to(params[0].device)
        twin.load_state_dict(module.state_dict())
        return twin.train(module.training)

    def extra_settings(self) -> str:
        return (f'aggr={self.aggr!r}, batch_norm={self.norm is not None}, '
                f'activation={self.activation_name!r}')

    def __repr__(self) -> str:
        extra = ', '.join(filter(None, (self.extra_settings(),
                                        self.quant_repr())))
        return (f'{self.__class__.__name__}({self.in_channels}, '
                f'{self.out_channels}, {extra})')


#: The parts of BinSAGEConv that SAGEConv lacks.
_BINARY_PARTS = ('norm.', 'rescale.', 'activation.')


def _keep_binary_parts(module: BinSAGEConv, state_dict: dict, prefix: str,
                       *args):
    r"""Lets a :class:`SAGEConv` state dict (none of the binary parts) load
    strictly: the binary parts keep their current values. A state dict with
    some of them is loaded as it is, so that missing ones are reported."""
    own = {prefix + key: value for key, value in module.state_dict().items()
           if key.startswith(_BINARY_PARTS)}
    if own and not any(key in state_dict for key in own):
        state_dict.update(own)
