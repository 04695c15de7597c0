r"""The float models the quantization examples start from: PyG's own
:class:`~torch_geometric.nn.models.BasicGNN` models, so that
:func:`~pyg_qgnn.quantize_model` swaps them whole, with the settings of the
papers we compare with."""
from typing import Optional

from torch import Tensor, nn
from torch_geometric.nn import global_add_pool
from torch_geometric.nn.models import GAT, GCN, GIN, MLP, GraphSAGE

#: Name -> (PyG model class, default hidden channels, extra arguments).
NODE_MODELS = {
    'gcn': (GCN, 16, dict(cached=True)),  # Kipf & Welling
    'gat': (GAT, 8, dict(heads=8)),  # Veličković et al.: 8 heads of 8
    'sage': (GraphSAGE, 64, {}),
    'gin': (GIN, 64, {}),
}


def node_classifier(name: str, in_channels: int, num_classes: int,
                    hidden_channels: Optional[int] = None,
                    num_layers: int = 2, dropout: float = 0.5) -> nn.Module:
    r"""A two-layer PyG :obj:`GCN`, :obj:`GAT`, :obj:`GraphSAGE` or
    :obj:`GIN` for transductive node classification.

    Args:
        name (str): :obj:`"gcn"`, :obj:`"gat"`, :obj:`"sage"` or :obj:`"gin"`.
        in_channels (int): Node feature size.
        num_classes (int): Number of classes.
        hidden_channels (int, optional): Hidden size (per head for GAT);
            :obj:`None` for the model's usual size (GCN 16, GAT 8 x 8 heads,
            SAGE and GIN 64). (default: :obj:`None`)
        num_layers (int, optional): Message-passing layers. (default: :obj:`2`)
        dropout (float, optional): Dropout between layers.
            (default: :obj:`0.5`)
    """
    try:
        cls, hidden, extra = NODE_MODELS[name]
    except KeyError:
        raise ValueError(f"'model' must be one of {sorted(NODE_MODELS)} "
                         f"(got {name!r})") from None
    hidden = hidden_channels or hidden
    if cls is GAT:
        hidden = hidden * extra['heads']  # BasicGNN counts all heads
    return cls(in_channels, hidden, num_layers, out_channels=num_classes,
               dropout=dropout, **extra)


class GraphClassifier(nn.Module):
    r"""GIN for graph classification as in `Degree-Quant
    <https://arxiv.org/abs/2008.05000>`_ and `Xu et al. (2019)
    <https://arxiv.org/abs/1810.00826>`_: :obj:`num_layers` GIN layers
    (PyG's :class:`~torch_geometric.nn.models.GIN`, each with a 2-layer MLP
    and batch norm), sum pooling, and a 2-layer MLP head.

    .. math::
        \mathbf{y}_G = \mathrm{MLP}\Big(\sum_{i \in G}
        \mathrm{GIN}(\mathbf{X}, \mathbf{A})_i\Big)

    Args:
        in_channels (int): Node feature size.
        num_classes (int): Number of graph classes.
        hidden_channels (int, optional): Hidden size. (default: :obj:`64`)
        num_layers (int, optional): GIN layers. (default: :obj:`5`)
        dropout (float, optional): Dropout in the head. (default: :obj:`0.5`)

    Shapes:
        - **input:** node features :math:`(|\mathcal{V}|, F_{in})`, edge
          indices :math:`(2, |\mathcal{E}|)`, batch vector
          :math:`(|\mathcal{V}|)`
        - **output:** graph logits :math:`(B, C)`
    """
    def __init__(self, in_channels: int, num_classes: int,
                 hidden_channels: int = 64, num_layers: int = 5,
                 dropout: float = 0.5):
        super().__init__()
        self.gnn = self.init_gnn(in_channels, hidden_channels, num_layers)
        self.head = MLP([hidden_channels, hidden_channels, num_classes],
                        norm=None, dropout=dropout)

    #: How node embeddings become one graph embedding (sum, as in GIN).
    pool = staticmethod(global_add_pool)

    def init_gnn(self, in_channels: int, hidden_channels: int,
                 num_layers: int) -> nn.Module:
        r"""The node-level GNN; subclasses swap in another one."""
        return GIN(in_channels, hidden_channels, num_layers,
                   norm='batch_norm')

    def reset_parameters(self):
        self.gnn.reset_parameters()
        self.head.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor) -> Tensor:
        return self.head(self.pool(self.gnn(x, edge_index), batch))
