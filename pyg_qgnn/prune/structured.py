r"""Structured pruning that removes hidden channels, so that a GNN really
computes less (`Li et al., 2017 <https://arxiv.org/abs/1608.08710>`_).

Masks (:func:`~pyg_qgnn.prune.magnitude_prune`) leave a model's shapes,
and so its running time, as they are. :func:`prune_channels` instead drops
the least important output channels of each hidden layer: the layer's
weight rows and bias entries, the matching entries of the normalization
that follows, and the matching input columns of the next layer. Channel
:math:`c` of a layer producing :math:`\mathbf{h} = \mathbf{x}\mathbf{W}^\top
+ \mathbf{b}` scores

.. math::
    s_c = \big\lVert(\mathbf{W}_{c,:}, b_c)\big\rVert_2

and the lowest-scoring share :obj:`amount` of every hidden layer goes.
A channel with zero weights and bias (and, after a normalization, one that
maps zero to zero) contributes nothing, so removing it keeps the model's
output.

`Torch-Pruning <https://github.com/VainF/Torch-Pruning>`_ traces layer
dependencies through autograd and has no rules for PyG's message passing
(its GNN pruner is unreleased, VainF/Torch-Pruning#104), so the supported
layers are handled here: :class:`torch.nn.Linear` and PyG's
:class:`~torch_geometric.nn.dense.Linear`, :class:`~torch_geometric.nn.conv.GCNConv`,
:class:`~torch_geometric.nn.conv.SAGEConv` (no projection, one simple
aggregation) and :class:`~torch_geometric.nn.conv.GINConv` (the hidden
channels of its MLP and its output), chained in PyG's
:class:`~torch_geometric.nn.models.BasicGNN` models (GCN, GraphSAGE, GIN;
no jumping knowledge), :class:`~torch_geometric.nn.models.MLP` and
:class:`torch.nn.Sequential`, with batch normalization or none between.
"""
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch_geometric.nn import GCNConv, GINConv, SAGEConv
from torch_geometric.nn.dense.linear import Linear as PyGLinear
from torch_geometric.nn.models import MLP
from torch_geometric.nn.models.basic_gnn import BasicGNN
from torch_geometric.nn.norm import BatchNorm

LINEARS = (nn.Linear, PyGLinear)
#: Layers whose output channels can be removed (exact class).
SUPPORTED = (nn.Linear, PyGLinear, GCNConv, SAGEConv, GINConv)
_ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU,
                nn.SiLU, nn.Mish, nn.Tanh, nn.Sigmoid, nn.Softplus, nn.ReLU6,
                nn.Hardtanh, nn.Hardswish, nn.Identity, nn.Dropout)
Slot = Tuple[nn.Module, str]  # a parameter or buffer: (module, attribute)


@dataclass
class ChannelGroup:
    r"""The channels between two layers: where they are and how many of
    them :func:`prune_channels` kept."""
    name: str
    before: int
    after: int


def _error(path: str, module: nn.Module, why: str) -> ValueError:
    return ValueError(f"prune_channels cannot handle '{path}' "
                      f"({type(module).__name__}): {why}")


def _chain_ends(path: str, layer: nn.Module) -> Tuple[List[Slot], List[Slot]]:
    r"""The slots holding :obj:`layer`'s output channels on dim 0 and its
    input channels on dim 1."""
    kind = type(layer)
    if kind in LINEARS:
        rows = [(layer, 'weight')] + ([(layer, 'bias')]
                                      if layer.bias is not None else [])
        return rows, [(layer, 'weight')]
    if kind is GCNConv:
        rows = [(layer.lin, 'weight')] + ([(layer, 'bias')]
                                          if layer.bias is not None else [])
        return rows, [(layer.lin, 'weight')]
    if kind is SAGEConv:
        if layer.project or not isinstance(layer.aggr, str) or \
                layer.aggr == 'lstm':
            raise _error(path, layer, 'only SAGEConv without projection and '
                         'with one simple aggregation is supported')
        lins = [layer.lin_l] + ([layer.lin_r] if layer.root_weight else [])
        rows = [(lin, name) for lin in lins for name in ('weight', 'bias')
                if getattr(lin, name) is not None]
        return rows, [(lin, 'weight') for lin in lins]
    if kind is GINConv:
        linears = [(f'{path}.nn.{name}', m)
                   for name, m in layer.nn.named_modules()
                   if type(m) in LINEARS]
        if not linears:
            raise _error(path, layer, 'its MLP has no Linear layer')
        first_rows_cols = _chain_ends(*linears[0])
        last_rows_cols = _chain_ends(*linears[-1])
        return last_rows_cols[0], first_rows_cols[1]
    raise _error(path, layer, f'supported layers are '
                 f'{", ".join(c.__name__ for c in SUPPORTED)}')


def _check_norm(path: str, norm: Optional[nn.Module]) -> List[Slot]:
    r"""The per-channel slots of the normalization between two layers."""
    if norm is None or isinstance(norm, nn.Identity):
        return []
    if isinstance(norm, BatchNorm):
        norm = norm.module
    if type(norm) is not nn.BatchNorm1d:
        raise _error(path, norm, 'only batch normalization (or none) may '
                     'stand between pruned layers')
    return [(norm, name) for name in ('weight', 'bias', 'running_mean',
                                      'running_var')
            if getattr(norm, name) is not None]


def _check_act(path: str, act) -> None:
    if isinstance(act, nn.Module) and (
            not isinstance(act, _ELEMENTWISE + (nn.PReLU, ))
            or sum(p.numel() for p in act.parameters()) > 1):
        raise _error(path, act, 'the activation between pruned layers must '
                     'act on each channel alone')


def _chains(model: nn.Module
            ) -> Iterator[Tuple[str, List[Tuple[str, nn.Module,
                                                Optional[nn.Module]]]]]:
    r"""Chains of layers :obj:`(path, layer, norm after it)` inside the
    containers of :obj:`model`."""
    for path, module in model.named_modules():
        prefix = f'{path}.' if path else ''
        if isinstance(module, BasicGNN):
            if module.jk_mode is not None:
                raise _error(path or 'model', module, 'jumping knowledge is '
                             'not supported')
            _check_act(path, module.act)
            yield path, [(f'{prefix}convs.{i}', conv, module.norms[i])
                         for i, conv in enumerate(module.convs)]
        elif isinstance(module, MLP):
            _check_act(path, module.act)
            norms = list(module.norms) + [None] * (len(module.lins) -
                                                   len(module.norms))
            yield path, [(f'{prefix}lins.{i}', lin, norm)
                         for i, (lin, norm) in enumerate(zip(module.lins,
                                                             norms))]
        elif type(module) is nn.Sequential:
            yield from _sequential_chains(prefix, module)


def _sequential_chains(prefix: str, sequential: nn.Sequential):
    chain = []
    for name, child in sequential.named_children():
        if type(child) in SUPPORTED:
            chain.append([f'{prefix}{name}', child, None])
        elif chain and isinstance(child, (BatchNorm, nn.BatchNorm1d)) and \
                chain[-1][2] is None:
            chain[-1][2] = child
        elif not (isinstance(child, _ELEMENTWISE) and chain):
            if len(chain) > 1:
                yield prefix.rstrip('.'), [tuple(c) for c in chain]
            chain = []  # anything else ends the chain
    if len(chain) > 1:
        yield prefix.rstrip('.'), [tuple(c) for c in chain]


def _importance(rows: Sequence[Slot]) -> Tensor:
    tensors = [getattr(m, n).detach() for m, n in rows]
    channels = tensors[0].size(0)
    return sum(t.reshape(channels, -1).pow(2).sum(1)
               for t in tensors).sqrt()


def _slice(slot: Slot, dim: int, keep: Tensor):
    module, name = slot
    old = getattr(module, name)
    new = old.detach().index_select(dim, keep).clone()
    if isinstance(old, nn.Parameter):
        setattr(module, name, nn.Parameter(new,
                                           requires_grad=old.requires_grad))
    else:
        setattr(module, name, new)


def _set_channels(module: nn.Module, count: int, output: bool):
    r"""Keeps the size attributes of :obj:`module` truthful."""
    names = (('out_channels', 'out_features') if output else
             ('in_channels', 'in_features'))
    if isinstance(module, nn.BatchNorm1d):
        module.num_features = count
        return
    if isinstance(module, BatchNorm):
        module.in_channels = count
        return
    for name in names:
        value = getattr(module, name, None)
        if isinstance(value, tuple):
            setattr(module, name, tuple(count for _ in value))
        elif isinstance(value, int):
            setattr(module, name, count)


@torch.no_grad()
def prune_channels(model: nn.Module, amount: float) -> List[ChannelGroup]:
    r"""Removes the lowest-scoring :obj:`amount` of the hidden channels of
    every supported chain of layers in :obj:`model`, in place (at least one
    channel stays). Input and output channels of the model are kept.

    Args:
        model (torch.nn.Module): A model built of supported layers, see
            :mod:`pyg_qgnn.prune.structured`; without pruning masks (call
            :func:`~pyg_qgnn.prune.make_permanent` first).
        amount (float): The share of channels to remove from each hidden
            layer, in :math:`[0, 1)`.

    Returns:
        One :class:`ChannelGroup` per hidden layer, in module order.
    """
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or \
            not 0.0 <= amount < 1.0:
        raise ValueError(f"'amount' must be a fraction in [0, 1) "
                         f"(got {amount!r})")
    if not isinstance(model, nn.Module):
        raise TypeError(f"'model' must be a torch.nn.Module "
                        f"(got {type(model).__name__})")
    if any(parametrize.is_parametrized(m) for m in model.modules()):
        raise ValueError("'model' has parametrized (masked) weights: call "
                         "prune.make_permanent(model) first")
    if any(isinstance(p, nn.parameter.UninitializedParameter)
           for p in model.parameters()):
        raise ValueError("'model' has lazy layers that are not initialized "
                         "yet: run one forward pass first")
    plans = []
    for _, chain in _chains(model):
        for (path, layer, norm), (_, following, _) in zip(chain, chain[1:]):
            rows, _ = _chain_ends(path, layer)
            _, cols = _chain_ends(path, following)
            plans.append((path, layer, norm, following, rows, cols,
                          _check_norm(path, norm)))
    if not plans:
        raise ValueError(f"'model' ({type(model).__name__}) has no hidden "
                         f"channels prune_channels can remove; supported "
                         f"layers are {', '.join(c.__name__ for c in SUPPORTED)}"
                         f" inside BasicGNN, MLP or Sequential models")
    groups = []
    for path, layer, norm, following, rows, cols, norm_slots in plans:
        score = _importance(rows)
        channels = score.numel()
        kept = max(channels - int(round(amount * channels)), 1)
        keep = torch.sort(torch.topk(score, kept, sorted=False).indices).values
        for slot in rows + norm_slots:
            _slice(slot, 0, keep)
        for slot in cols:
            _slice(slot, 1, keep)
        for module, _ in rows:
            _set_channels(module, kept, output=True)
        for module, _ in cols:
            _set_channels(module, kept, output=False)
        for module in (layer, following):
            _set_channels(module, kept, output=module is layer)
        if norm is not None:
            _set_channels(norm, kept, output=True)
            if isinstance(norm, BatchNorm):
                _set_channels(norm.module, kept, output=True)
        groups.append(ChannelGroup(path, channels, kept))
    for module in model.modules():
        if isinstance(module, MLP):
            module.channel_list = [module.lins[0].in_channels] + [
                lin.out_channels for lin in module.lins]
    return groups
