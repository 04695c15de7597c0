r"""Local structure preserving distillation (LSP, `Yang et al., 2020
<https://arxiv.org/abs/2003.10477>`_) for dynamic graphs, as used by binary
GNNs (`Bahri et al., 2021 <https://arxiv.org/abs/2012.15823>`_, Eq. 6–7 and
22): the student's and the teacher's local structures are compared over the
union of their neighbourhoods.

The transfer points of a dynamic model are its :class:`~pyg_qgnn.nn.conv.
knn_graph.KNNGraph` modules: :class:`GraphRecorder` collects the features
each graph was built on together with the graph.
"""
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter

from pyg_qgnn.nn.conv.knn_graph import KNNGraph

SIMILARITIES = ('rbf', 'hamming')


def _check_similarity(similarity: str, name: str) -> str:
    if similarity not in SIMILARITIES:
        raise ValueError(f"'{name}' must be one of {SIMILARITIES} "
                         f"(got {similarity!r})")
    return similarity


def edge_similarity(x: Tensor, edge_index: Tensor, similarity: str = 'rbf',
                    gamma: float = 1.0) -> Tensor:
    r"""The similarity of the two ends of every edge :math:`(j \to i)`:

    * :obj:`"rbf"`: :math:`\exp(-\gamma\,\lVert\mathbf{x}_i -
      \mathbf{x}_j\rVert_2^2)`, the Gaussian RBF kernel;
    * :obj:`"hamming"`: :math:`\exp(-\lVert\mathbf{x}_i \oplus
      \mathbf{x}_j\rVert_H)` with :math:`\lVert\mathbf{x} \oplus
      \mathbf{y}\rVert_H = \frac{1}{2}\sum_k (1 - x_k y_k)` (Eq. 22), exact
      on :math:`\pm 1` features and a relaxation on features in
      :math:`[-1, 1]` (:math:`\tanh`-relaxed ones); real features beyond
      that range have no Hamming distance and are an error.
    """
    _check_similarity(similarity, 'similarity')
    if (similarity == 'hamming' and x.numel()
            and float(x.detach().abs().max()) > 1):
        raise ValueError("the 'hamming' similarity needs binary or relaxed "
                         "features in [-1, 1]; use 'rbf' for real features")
    x_j, x_i = x[edge_index[0]], x[edge_index[1]]
    if similarity == 'rbf':
        return torch.exp(-gamma * (x_i - x_j).pow(2).sum(-1))
    return torch.exp(-0.5 * (1 - x_i * x_j).sum(-1))


def _group_log_softmax(src: Tensor, index: Tensor, num_nodes: int) -> Tensor:
    top = scatter(src.detach(), index, 0, num_nodes, reduce='max')
    shifted = src - top[index]
    total = scatter(shifted.exp(), index, 0, num_nodes, reduce='sum')
    return shifted - total.log()[index]


def local_structure(x: Tensor, edge_index: Tensor, similarity: str = 'rbf',
                    gamma: float = 1.0) -> Tensor:
    r"""The logarithm of the local structure vectors of Eq. 6, one entry per
    edge :math:`(j \to i)`:

    .. math::
        LS_{ij} = \frac{\exp(\mathrm{SIM}(\mathbf{x}_i, \mathbf{x}_j))}
        {\sum_{k \in \mathcal{N}(i)} \exp(\mathrm{SIM}(\mathbf{x}_i,
        \mathbf{x}_k))}

    with :math:`\mathrm{SIM}` of :func:`edge_similarity`.
    """
    sims = edge_similarity(x, edge_index, similarity, gamma)
    return _group_log_softmax(sims, edge_index[1], x.size(0))


def _check_graph(edge_index: Tensor, num_nodes: int, name: str):
    if (not isinstance(edge_index, Tensor) or edge_index.dim() != 2
            or edge_index.size(0) != 2 or edge_index.is_floating_point()):
        raise ValueError(f"'{name}' must be an integer tensor of shape "
                         f"(2, E) (got {getattr(edge_index, 'shape', None)})")
    if edge_index.numel() and (int(edge_index.min()) < 0
                               or int(edge_index.max()) >= num_nodes):
        raise ValueError(f"'{name}' must index the {num_nodes} points")


def lsp_loss(student_x: Tensor, teacher_x: Tensor,
             student_edge_index: Tensor,
             teacher_edge_index: Optional[Tensor] = None,
             similarity: str = 'rbf',
             teacher_similarity: Optional[str] = None,
             gamma: float = 1.0) -> Tensor:
    r"""The LSP loss of Eq. 7 over the union :math:`\mathcal{N}^u(i) =
    \mathcal{N}^s(i) \cup \mathcal{N}^t(i)` of both neighbourhoods:

    .. math::
        \mathcal{L}_{LSP} = \frac{1}{|\mathcal{V}|} \sum_{i \in \mathcal{V}}
        \sum_{j \in \mathcal{N}^u(i)} LS^s_{ij}
        \log \frac{LS^s_{ij}}{LS^t_{ij}}

    (the direction the paper writes; the authors' code computes the reverse
    divergence).

    Args:
        student_x (torch.Tensor): Student point features :math:`(N, F_s)`.
        teacher_x (torch.Tensor): Teacher point features :math:`(N, F_t)`.
        student_edge_index (torch.Tensor): The student's graph
            :math:`(2, E_s)`, row 1 the point whose neighbourhood it is.
        teacher_edge_index (torch.Tensor, optional): The teacher's graph.
            (default: :obj:`None`, the student's)
        similarity (str, optional): The student's :math:`\mathrm{SIM}`:
            :obj:`"rbf"` or :obj:`"hamming"`. (default: :obj:`"rbf"`)
        teacher_similarity (str, optional): The teacher's.
            (default: :obj:`None`, as the student's)
        gamma (float, optional): :math:`\gamma` of the RBF kernel.
            (default: :obj:`1.0`)
    """
    _check_similarity(similarity, 'similarity')
    teacher_similarity = _check_similarity(teacher_similarity or similarity,
                                           'teacher_similarity')
    num_nodes = student_x.size(0)
    if teacher_x.size(0) != num_nodes:
        raise ValueError(f"'student_x' and 'teacher_x' must describe the same "
                         f"points (got {num_nodes} and {teacher_x.size(0)})")
    _check_graph(student_edge_index, num_nodes, 'student_edge_index')
    edge_index = student_edge_index
    if teacher_edge_index is not None:
        _check_graph(teacher_edge_index, num_nodes, 'teacher_edge_index')
        edge_index = torch.cat([student_edge_index, teacher_edge_index], 1)
    edge_index = torch.unique(edge_index, dim=1)
    log_s = local_structure(student_x, edge_index, similarity, gamma)
    log_t = local_structure(teacher_x, edge_index, teacher_similarity, gamma)
    return (log_s.exp() * (log_s - log_t)).sum() / max(num_nodes, 1)


class LSPLoss(nn.Module):
    r"""Module form of :func:`lsp_loss`.

    Args:
        similarity (str, optional): The student's similarity.
            (default: :obj:`"rbf"`)
        teacher_similarity (str, optional): The teacher's.
            (default: :obj:`None`, as the student's)
        gamma (float, optional): :math:`\gamma` of the RBF kernel.
            (default: :obj:`1.0`)
    """
    def __init__(self, similarity: str = 'rbf',
                 teacher_similarity: Optional[str] = None,
                 gamma: float = 1.0):
        super().__init__()
        self.similarity = _check_similarity(similarity, 'similarity')
        self.teacher_similarity = _check_similarity(
            teacher_similarity or similarity, 'teacher_similarity')
        self.gamma = gamma

    def forward(self, student_x: Tensor, teacher_x: Tensor,
                student_edge_index: Tensor,
                teacher_edge_index: Optional[Tensor] = None) -> Tensor:
        return lsp_loss(student_x, teacher_x, student_edge_index,
                        teacher_edge_index, self.similarity,
                        self.teacher_similarity, self.gamma)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(similarity={self.similarity!r}, '
                f'teacher_similarity={self.teacher_similarity!r})')


class GraphRecorder:
    r"""Records ``(features, edge_index)`` at every :class:`KNNGraph` of a
    model while active, in call order: the LSP transfer points.

    .. code-block:: python

        with GraphRecorder(student) as s, GraphRecorder(teacher) as t:
            logits_s, logits_t = student(pos, batch), teacher(pos, batch)
        loss = sum(lsp_loss(xs, xt, es, et)
                   for (xs, es), (xt, et) in zip(s.graphs[1:], t.graphs[1:]))
    """
    def __init__(self, model: nn.Module):
        self.model = model
        self.graphs: List[Tuple[Tensor, Tensor]] = []
        self._handles = []

    def _record(self, module, args, kwargs, output):
        x = args[0] if args else kwargs['x']
        self.graphs.append((x, output))

    def __enter__(self) -> 'GraphRecorder':
        self.graphs = []
        self._handles = [
            module.register_forward_hook(self._record, with_kwargs=True)
            for module in self.model.modules() if isinstance(module, KNNGraph)
        ]
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        self._handles = []
