from torch import Tensor
from torch_geometric.typing import OptTensor

from pyg_qgnn.nn.conv.bin_edge_conv import BinEdgeConv
from pyg_qgnn.nn.conv.knn_graph import KNNGraph


class DynamicBinEdgeConv(BinEdgeConv):
    r""":class:`BinEdgeConv` on the :math:`k`-nearest-neighbour graph of its
    input features, rebuilt at every call as in
    :class:`torch_geometric.nn.DynamicEdgeConv` (`Bahri et al., 2021
    <https://arxiv.org/abs/2012.15823>`_, "RF" model):

    .. math::
        \mathbf{x}^{\prime}_i = \max_{j \in \mathrm{kNN}(i)} \sigma\Big(
        \mathrm{sign}(\mathbf{\Theta}) \circledast \mathrm{sign}\big(
        \mathrm{BN}(\mathbf{x}_i \,\Vert\, \mathbf{x}_j - \mathbf{x}_i)\big)
        \odot \Gamma\Big)

    Neighbours are searched within each cloud of :obj:`batch`, the point
    itself included, in pure PyTorch (:class:`~pyg_qgnn.nn.conv.knn_graph.
    KNNGraph`; unlike :class:`DynamicEdgeConv`, neither :obj:`torch_cluster`
    nor :obj:`pyg-lib` is needed).

    Args:
        in_channels (int): Size of each point feature.
        out_channels (int): Size of each output feature.
        k (int): Number of nearest neighbours.
        aggr (str, optional): The aggregation. (default: :obj:`"max"`)
        knn (str, optional): The distance of the neighbour search:
            :obj:`"l2"` or :obj:`"xor"` (Eq. 21, meant for binary
            features). (default: :obj:`"l2"`)
        **kwargs (optional): Arguments of :class:`BinEdgeConv`.

    Shapes:
        - **input:**
          point features :math:`(|\mathcal{V}|, F_{in})`,
          batch vector :math:`(|\mathcal{V}|)` *(optional)*
        - **output:** point features :math:`(|\mathcal{V}|, F_{out})`
    """
    def __init__(self, in_channels: int, out_channels: int, k: int,
                 aggr: str = 'max', *, knn: str = 'l2', **kwargs):
        super().__init__(in_channels, out_channels, aggr, **kwargs)
        self.knn_graph = KNNGraph(k, knn)

    @property
    def k(self) -> int:
        return self.knn_graph.k

    def forward(self, x: Tensor, batch: OptTensor = None) -> Tensor:
        return super().forward(x, self.knn_graph(x, batch))

    def extra_settings(self) -> str:
        return (f'k={self.k}, knn={self.knn_graph.metric!r}, '
                f'{super().extra_settings()}')
