from torch import Tensor
from torch_geometric.typing import OptTensor

from pyg_qgnn.nn.conv.knn_graph import KNNGraph
from pyg_qgnn.nn.conv.xor_edge_conv import XorEdgeConv


class DynamicXorEdgeConv(XorEdgeConv):
    r""":class:`XorEdgeConv` on the :math:`k`-nearest-neighbour graph of its
    binary input features, rebuilt at every call: the dynamic graph in
    Hamming space of `Bahri et al., 2021 <https://arxiv.org/abs/2012.15823>`_
    (§4.2, "BF" models).

    .. math::
        \mathbf{x}^{\prime}_i = \mathrm{sign}\Big(\mathrm{BN}\big(
        \max_{j \in \mathrm{kNN}(i)} \sigma\big(\mathrm{sign}(\mathbf{\Theta})
        \circledast [\mathbf{x}_i \,\Vert\, -\mathbf{x}_j \odot \mathbf{x}_i]
        \odot \Gamma\big)\big)\Big)

    (BN inside the maximum for :obj:`norm="before"`). In training the
    neighbours come from the relaxation chosen by :obj:`knn`: :obj:`"l2"`,
    or :obj:`"xor"`, :math:`\mathbf{D} = -(\mathbf{X}\mathbf{X}^{\top} -
    d\,\mathbf{1})` of Eq. 21; on binary features both order neighbours as
    the Hamming distance does. In evaluation on binary features they come
    from exact Hamming distances on packed bits
    (:func:`pyg_qgnn.deploy.knn.hamming_knn_graph`). Ties go to the
    lower point index on binary features. Neighbours are searched within
    each cloud of :obj:`batch`, the point itself included, in pure PyTorch.

    Args:
        in_channels (int): Size of each point feature.
        out_channels (int): Size of each output feature.
        k (int): Number of nearest neighbours.
        aggr (str, optional): The aggregation. (default: :obj:`"max"`)
        norm (str, optional): :obj:`"after"` (BF1) or :obj:`"before"` (BF2).
            (default: :obj:`"after"`)
        knn (str, optional): The training-time distance, :obj:`"l2"` or
            :obj:`"xor"`. (default: :obj:`"l2"`)
        **kwargs (optional): Arguments of :class:`XorEdgeConv`.

    Shapes:
        - **input:**
          point features :math:`(|\mathcal{V}|, F_{in})`,
          batch vector :math:`(|\mathcal{V}|)` *(optional)*
        - **output:** point features :math:`(|\mathcal{V}|, F_{out})`
    """
    def __init__(self, in_channels: int, out_channels: int, k: int,
                 aggr: str = 'max', norm: str = 'after', *, knn: str = 'l2',
                 **kwargs):
        super().__init__(in_channels, out_channels, aggr, norm, **kwargs)
        self.knn_graph = KNNGraph(k, knn)

    @property
    def k(self) -> int:
        return self.knn_graph.k

    def forward(self, x: Tensor, batch: OptTensor = None) -> Tensor:
        x = self.quant('input', x)
        edge_index = self.knn_graph(x, batch, binary=self.binary_input)
        return self.convolve((x, x), edge_index)

    def extra_settings(self) -> str:
        return (f'k={self.k}, knn={self.knn_graph.metric!r}, '
                f'{super().extra_settings()}')
