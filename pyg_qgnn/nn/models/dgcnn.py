r"""Dynamic Graph CNN classifiers for point clouds: the float model of `Wang
et al., 2019 <https://arxiv.org/abs/1801.07829>`_ and its binary variants of
`Bahri et al., 2021 <https://arxiv.org/abs/2012.15823>`_ (§5.2, following the
authors' code: four EdgeConv layers of 64, 64, 128 and 256 channels on
:math:`k = 20` neighbours, a 1024-channel embedding of their concatenation,
global max and mean pooling, and an MLP of 512 and 256 channels with dropout
0.5 whose last layer stays real-valued).
"""
from typing import Optional, Sequence

import torch
from torch import Tensor, nn
from torch_geometric.nn import global_max_pool, global_mean_pool
from torch_geometric.nn.conv import EdgeConv
from torch_geometric.typing import OptTensor

from pyg_qgnn.nn.conv.dynamic_bin_edge_conv import DynamicBinEdgeConv
from pyg_qgnn.nn.conv.dynamic_xor_edge_conv import DynamicXorEdgeConv
from pyg_qgnn.nn.conv.knn_graph import KNNGraph
from pyg_qgnn.nn.dense.bin_linear import BinLinear
from pyg_qgnn.quantizers.binary import SignQuantizer

VARIANTS = ('rf', 'bf1', 'bf2')


class _DynamicEdgeConv(EdgeConv):
    r""":class:`torch_geometric.nn.EdgeConv` on the kNN graph of its input,
    rebuilt at every call (:class:`torch_geometric.nn.DynamicEdgeConv`
    without its :obj:`torch_cluster` dependency): the layer of the float
    DGCNN.

    Args:
        nn (torch.nn.Module): The edge MLP :math:`h_{\mathbf{\Theta}}`.
        k (int): Number of nearest neighbours.
        aggr (str, optional): The aggregation. (default: :obj:`"max"`)
    """
    def __init__(self, nn: nn.Module, k: int, aggr: str = 'max'):
        super().__init__(nn, aggr=aggr)
        self.knn_graph = KNNGraph(k)

    def forward(self, x: Tensor, batch: OptTensor = None) -> Tensor:
        return super().forward(x, self.knn_graph(x, batch))

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(nn={self.nn}, k={self.knn_graph.k})'


def _float_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_channels, out_channels, bias=False),
                         nn.BatchNorm1d(out_channels),
                         nn.LeakyReLU(negative_slope=0.2))


class PointCloudClassifier(nn.Module):
    r"""What the DGCNN classifiers share: a stack of dynamic edge
    convolutions whose outputs are concatenated, embedded, pooled by global
    max and mean, and classified by :obj:`head`. Subclasses build
    :obj:`convs`, :obj:`embed` and :obj:`head`."""
    convs: nn.ModuleList
    embed: nn.Module
    head: nn.Module

    def forward(self, x: Tensor, batch: OptTensor = None) -> Tensor:
        r"""Class logits :math:`(B, C)` of the clouds of point features
        :obj:`x` :math:`(N, F)` (coordinates, optionally normals) with cloud
        index :obj:`batch`."""
        features = []
        for conv in self.convs:
            x = conv(x, batch)
            features.append(x)
        x = self.embed(torch.cat(features, dim=-1))
        size = None if batch is None else int(batch.max()) + 1
        x = torch.cat([global_max_pool(x, batch, size),
                       global_mean_pool(x, batch, size)], dim=-1)
        return self.head(x)


def _check_widths(conv_channels, hidden_channels):
    if not conv_channels or not hidden_channels:
        raise ValueError("'conv_channels' and 'hidden_channels' must not be "
                         "empty")


class DGCNN(PointCloudClassifier):
    r"""The float DGCNN classifier (`Wang et al., 2019
    <https://arxiv.org/abs/1801.07829>`_), the teacher and baseline of the
    binary models:

    .. math::
        \mathbf{x}^{(l)}_i = \max_{j \in \mathrm{kNN}(i)}
        \mathrm{LReLU}\big(\mathrm{BN}(\mathbf{\Theta}^{(l)}
        [\mathbf{x}^{(l-1)}_i \,\Vert\, \mathbf{x}^{(l-1)}_j -
        \mathbf{x}^{(l-1)}_i])\big)

    with the kNN graph rebuilt on the features of every layer.

    Args:
        in_channels (int, optional): Point feature size. (default: :obj:`3`)
        num_classes (int, optional): Number of classes. (default: :obj:`40`)
        k (int, optional): Number of neighbours. (default: :obj:`20`)
        conv_channels (Sequence[int], optional): Widths of the edge
            convolutions. (default: :obj:`(64, 64, 128, 256)`)
        embed_channels (int, optional): Width of the embedding before
            pooling. (default: :obj:`1024`)
        hidden_channels (Sequence[int], optional): Widths of the hidden
            layers of the classifier. (default: :obj:`(512, 256)`)
        dropout (float, optional): Dropout of the classifier.
            (default: :obj:`0.5`)

    Shapes:
        - **input:** point features :math:`(N, F)`, batch vector :math:`(N)`
          *(optional)*
        - **output:** logits :math:`(B, C)`
    """
    def __init__(self, in_channels: int = 3, num_classes: int = 40,
                 k: int = 20,
                 conv_channels: Sequence[int] = (64, 64, 128, 256),
                 embed_channels: int = 1024,
                 hidden_channels: Sequence[int] = (512, 256),
                 dropout: float = 0.5):
        super().__init__()
        _check_widths(conv_channels, hidden_channels)
        widths = [in_channels] + list(conv_channels)
        self.convs = nn.ModuleList(
            _DynamicEdgeConv(_float_block(2 * c_in, c_out), k)
            for c_in, c_out in zip(widths[:-1], widths[1:]))
        self.embed = _float_block(sum(conv_channels), embed_channels)
        layers, width = [], 2 * embed_channels
        for hidden in hidden_channels:
            layers += [_float_block(width, hidden), nn.Dropout(dropout)]
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        self.head = nn.Sequential(*layers)


class BinaryDGCNN(PointCloudClassifier):
    r"""The binary DGCNN classifiers of `Bahri et al., 2021
    <https://arxiv.org/abs/2012.15823>`_:

    * :obj:`"rf"` (real graph features, §4.1): :class:`~pyg_qgnn.nn.
      DynamicBinEdgeConv` layers, binary weights and binary inputs inside
      every edge MLP, real node features and kNN;
    * :obj:`"bf1"` / :obj:`"bf2"` (binary graph features, §4.2):
      :class:`~pyg_qgnn.nn.DynamicXorEdgeConv` layers with batch
      normalization after (Eq. 19) or before (Eq. 20) the aggregation; node
      features are binary and the kNN graph lives in Hamming space.

    The first layer sees real coordinates (real inputs, binary weights, kNN
    on :math:`\ell_2`). The embedding and the hidden classifier layers are
    XNOR-Net++ blocks (:class:`~pyg_qgnn.nn.BinLinear`); the last layer has
    real weights and binary inputs. The cascaded-distillation stage is set
    with :func:`~pyg_qgnn.quantizers.set_binarization_stage` (a new model is
    fully binary, stage 3).

    Args:
        variant (str, optional): :obj:`"rf"`, :obj:`"bf1"` or :obj:`"bf2"`.
            (default: :obj:`"rf"`)
        in_channels (int, optional): Point feature size. (default: :obj:`3`)
        num_classes (int, optional): Number of classes. (default: :obj:`40`)
        k (int, optional): Number of neighbours. (default: :obj:`20`)
        knn (str, optional): The training-time distance of the dynamic graphs
            after the first: :obj:`"l2"` or :obj:`"xor"` (Eq. 21).
            (default: :obj:`"l2"`)
        conv_channels (Sequence[int], optional): Widths of the edge
            convolutions. (default: :obj:`(64, 64, 128, 256)`)
        embed_channels (int, optional): Width of the embedding.
            (default: :obj:`1024`)
        hidden_channels (Sequence[int], optional): Widths of the hidden
            classifier layers. (default: :obj:`(512, 256)`)
        dropout (float, optional): Dropout of the classifier.
            (default: :obj:`0.5`)
        activation (str, optional): :math:`\sigma` of every binary block:
            :obj:`"prelu"`, :obj:`"relu"` or :obj:`None`.
            (default: :obj:`"prelu"`)

    Shapes:
        - **input:** point features :math:`(N, F)`, batch vector :math:`(N)`
          *(optional)*
        - **output:** logits :math:`(B, C)`
    """
    def __init__(self, variant: str = 'rf', in_channels: int = 3,
                 num_classes: int = 40, k: int = 20, knn: str = 'l2',
                 conv_channels: Sequence[int] = (64, 64, 128, 256),
                 embed_channels: int = 1024,
                 hidden_channels: Sequence[int] = (512, 256),
                 dropout: float = 0.5, activation: Optional[str] = 'prelu'):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"'variant' must be one of {VARIANTS} "
                             f"(got {variant!r})")
        _check_widths(conv_channels, hidden_channels)
        self.variant = variant
        widths = [in_channels] + list(conv_channels)
        convs = []
        for layer, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:])):
            first = layer == 0  # real coordinates, l2 kNN
            kwargs = dict(knn='l2' if first else knn, activation=activation,
                          input_quantizer=None if first else 'sign')
            if variant == 'rf':
                convs.append(DynamicBinEdgeConv(c_in, c_out, k, **kwargs))
            else:
                norm = 'after' if variant == 'bf1' else 'before'
                convs.append(DynamicXorEdgeConv(c_in, c_out, k, norm=norm,
                                                **kwargs))
        self.convs = nn.ModuleList(convs)
        if variant == 'rf':
            self.embed = BinLinear(sum(conv_channels), embed_channels,
                                   bias=False, activation=activation)
        else:  # binary features already: no normalization before the sign
            self.embed = nn.Sequential(
                BinLinear(sum(conv_channels), embed_channels, bias=False,
                          batch_norm=False, activation=activation,
                          input_quantizer=SignQuantizer(relaxation=None)),
                nn.BatchNorm1d(embed_channels))
        layers, width = [], 2 * embed_channels
        for hidden in hidden_channels:
            layers += [BinLinear(width, hidden, bias=False,
                                 activation=activation), nn.Dropout(dropout)]
            width = hidden
        layers.append(BinLinear(width, num_classes, activation=None,
                                weight_quantizer=None))
        self.head = nn.Sequential(*layers)

    def extra_repr(self) -> str:
        return f'variant={self.variant!r}'
