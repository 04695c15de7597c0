r"""The dynamic graph of DGCNN-style layers: the :math:`k` nearest neighbours
of every point within its own cloud, in pure PyTorch (neither
:obj:`torch_cluster` nor :obj:`pyg-lib` is needed).

Training selects neighbours on a distance of the user's choice (`Bahri et
al., 2021 <https://arxiv.org/abs/2012.15823>`_, §4.2): :obj:`"l2"`, or
:obj:`"xor"`, the relaxed Hamming distance of Eq. 21,

.. math::
    \mathbf{D} = -(\mathbf{X}\mathbf{X}^{\top} - d\,\mathbf{1}),

which is twice the Hamming distance on :math:`\pm 1` features (the paper
writes the all-:math:`d` matrix as :math:`d\mathbf{I}`). On binary features
in evaluation, :class:`KNNGraph` takes exact Hamming distances on packed
bits (:func:`pyg_qgnn.deploy.knn.hamming_knn_graph`), which give the same
graph.
"""
from typing import Optional

import torch
from torch import Tensor, nn
from torch_geometric.utils import to_dense_batch

from pyg_qgnn.quantizers.binary import check_finite_input, check_signs
from pyg_qgnn.quantizers.functional import check_floating

KNN_METRICS = ('l2', 'xor')


def check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"'k' must be a positive int (got {k!r})")
    return k


def check_batch(batch: Optional[Tensor], num_nodes: int,
                device: torch.device) -> Tensor:
    r"""The cloud index of every point: zeros for :obj:`None`, else
    :obj:`batch` after checking that it is a sorted integer vector with one
    entry per point."""
    if batch is None:
        return torch.zeros(num_nodes, dtype=torch.long, device=device)
    if (not isinstance(batch, Tensor) or batch.is_floating_point()
            or batch.is_complex() or batch.dtype == torch.bool):
        raise TypeError(f"'batch' must be an integer tensor (got "
                        f"{getattr(batch, 'dtype', type(batch).__name__)})")
    if batch.dim() != 1 or batch.numel() != num_nodes:
        raise ValueError(f"'batch' must have one entry per point: shape "
                         f"({num_nodes},) (got {tuple(batch.shape)})")
    if num_nodes and int(batch.min()) < 0:
        raise ValueError("'batch' must hold non-negative cloud indices")
    if num_nodes > 1 and bool((batch[1:] < batch[:-1]).any()):
        raise ValueError("'batch' must be sorted (the points of each cloud "
                         "contiguous, clouds in increasing order)")
    return batch.long()


def pairwise_distances(x: Tensor, metric: str) -> Tensor:
    r"""Distances between the rows of every cloud of :obj:`x`
    :math:`(B, N, d)`: squared :math:`\ell_2` or Eq. 21."""
    gram = torch.bmm(x, x.transpose(1, 2))
    if metric == 'xor':
        return x.size(-1) - gram
    sq = x.pow(2).sum(-1)
    return (sq.unsqueeze(2) + sq.unsqueeze(1) - 2 * gram).clamp_(min=0)


def _index_keys(dist: Tensor, width: int) -> Tensor:
    r"""Unique keys :math:`D_{ij} \cdot N + j` of integer distances: equal
    distances order by index. Exact in :obj:`float32` up to :math:`2^{24}`,
    else in :obj:`float64`."""
    top = (float(dist.max()) + 1) * width if dist.numel() else 0
    if top >= 2**24:
        dist = dist.double()
    columns = torch.arange(width, device=dist.device, dtype=dist.dtype)
    return dist.mul_(width).add_(columns)


@torch.no_grad()
def knn_graph(x: Tensor, k: int, batch: Optional[Tensor] = None,
              metric: str = 'l2', binary: bool = False) -> Tensor:
    r"""The :math:`k` nearest neighbours of every point within its cloud,
    itself included, as the dynamic graph of
    :class:`torch_geometric.nn.DynamicEdgeConv`: a cloud of fewer than
    :math:`k` points links each point to all of its points.

    Args:
        x (torch.Tensor): Point features :math:`(N, d)`.
        k (int): The number of neighbours.
        batch (torch.Tensor, optional): Sorted cloud index of every point.
            (default: :obj:`None`, one cloud)
        metric (str, optional): :obj:`"l2"` or :obj:`"xor"` (Eq. 21).
            (default: :obj:`"l2"`)
        binary (bool, optional): :obj:`x` holds :math:`\pm 1` values, so
            distances are integers: ties then go to the lower index, exactly
            as in :func:`pyg_qgnn.deploy.knn.hamming_knn_graph`.
            (default: :obj:`False`)

    Returns:
        :obj:`edge_index` :math:`(2, E)`, row 0 the neighbour :math:`j`
        (source), row 1 the point :math:`i` (target), grouped by :math:`i`
        from the nearest neighbour on.
    """
    check_k(k)
    if metric not in KNN_METRICS:
        raise ValueError(f"'metric' must be one of {KNN_METRICS} "
                         f"(got {metric!r})")
    check_floating(x)
    if x.dim() != 2:
        raise ValueError(f"'x' must be a 2-D (points, features) tensor "
                         f"(got shape {tuple(x.shape)})")
    check_finite_input(x)
    batch = check_batch(batch, x.size(0), x.device)
    if x.size(0) == 0:
        return torch.empty(2, 0, dtype=torch.long, device=x.device)
    if binary:
        check_signs(x, 'x')

    dense, mask = to_dense_batch(x.detach(), batch)  # (B, Nmax, d)
    width = mask.size(1)
    if binary:  # both metrics order as d - <x_i, x_j> = 2 x Hamming does
        dist = _index_keys(pairwise_distances(dense, 'xor'), width)
    else:
        dist = pairwise_distances(dense, metric)
    dist.masked_fill_(~mask.unsqueeze(1), float('inf'))
    nearest = dist.topk(min(k, width), dim=-1, largest=False).indices

    counts = mask.sum(1)
    ptr = torch.cumsum(counts, 0) - counts  # first point of each cloud
    rank = torch.arange(nearest.size(-1), device=x.device)
    valid = mask.unsqueeze(-1) & (rank < counts.view(-1, 1, 1))
    offset = ptr.view(-1, 1, 1)
    rows = torch.arange(width, device=x.device).view(1, -1, 1)
    center = (rows + offset).expand_as(nearest)
    return torch.stack([(nearest + offset)[valid], center[valid]])


class KNNGraph(nn.Module):
    r"""Builds the dynamic graph of a layer (see :func:`knn_graph`) and is
    the place where it can be observed: a forward hook on it sees the
    features the graph was built on and the graph, which is what
    :mod:`pyg_qgnn.distill.lsp` compares between student and teacher.

    Args:
        k (int): The number of neighbours.
        metric (str, optional): The training-time distance, :obj:`"l2"` or
            :obj:`"xor"` (Eq. 21). (default: :obj:`"l2"`)
    """
    def __init__(self, k: int, metric: str = 'l2'):
        super().__init__()
        check_k(k)
        if metric not in KNN_METRICS:
            raise ValueError(f"'knn' must be one of {KNN_METRICS} "
                             f"(got {metric!r})")
        self.k = k
        self.metric = metric

    def forward(self, x: Tensor, batch: Optional[Tensor] = None,
                binary: bool = False) -> Tensor:
        r"""The graph on :obj:`x`; :obj:`binary` declares :math:`\pm 1`
        features, whose graph in evaluation mode comes from Hamming distances
        on packed bits (:func:`pyg_qgnn.deploy.knn.hamming_knn_graph`)."""
        if binary and not self.training:
            # Imported here: pyg_qgnn.deploy imports the layers using this.
            from pyg_qgnn.deploy.knn import hamming_knn_graph
            return hamming_knn_graph(x, self.k, batch)
        return knn_graph(x, self.k, batch, self.metric, binary)

    def extra_repr(self) -> str:
        return f'k={self.k}, metric={self.metric!r}'
