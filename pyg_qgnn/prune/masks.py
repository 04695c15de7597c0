r"""Pruning masks held as :mod:`torch.nn.utils.parametrize` parametrizations.

A pruned weight :math:`\mathbf{W}` of a layer becomes

.. math::
    \mathbf{W}_{\mathrm{eff}} = \mathbf{W} \odot \mathbf{M},
    \qquad \mathbf{M} \in \{0, 1\}^{\mathrm{shape}(\mathbf{W})}

computed on each access of :obj:`layer.weight`, so any training loop
fine-tunes a pruned model with its masks held fixed: the gradient of a
pruned entry is zero and its effective value stays zero. The mask is a
buffer, so it is part of the state dict and survives
:meth:`~torch.nn.Module.state_dict` / :meth:`~torch.nn.Module.load_state_dict`
and :func:`copy.deepcopy`. :func:`make_permanent` folds the masks into
plain weights (needed before :func:`~pyg_qgnn.quantize_model`, which swaps
layers by their exact class).

Tensors are named by their *logical* names, :obj:`"convs.0.lin.weight"`,
whether or not they are masked (the state dict stores a masked one as
:obj:`"convs.0.lin.parametrizations.weight.original"` plus its mask).
"""
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, \
    Union

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.utils import parametrize

#: ``include(module, name, tensor) -> bool``: is :obj:`module.<name>`
#: prunable?
Include = Callable[[nn.Module, str, Tensor], bool]
#: A selection of prunable tensors: a predicate, or their logical names.
Selection = Union[None, Include, Sequence[str]]
#: One prunable tensor: its logical name, its module and its attribute name.
Target = Tuple[str, nn.Module, str]

_NORMS = (_NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)


class WeightMask(nn.Module):
    r"""The parametrization :math:`\mathbf{W} \mapsto \mathbf{W} \odot
    \mathbf{M}` with a fixed boolean mask :math:`\mathbf{M}` (a buffer).

    Args:
        mask (torch.Tensor): Boolean tensor of the weight's shape;
            :obj:`True` keeps an entry.

    Shapes:
        - **input:** the weight, of the mask's shape
        - **output:** the masked weight, same shape and dtype
    """
    def __init__(self, mask: Tensor):
        super().__init__()
        self.register_buffer('mask', mask.detach().to(torch.bool).clone())

    def forward(self, weight: Tensor) -> Tensor:
        return weight * self.mask

    def extra_repr(self) -> str:
        kept = int(self.mask.sum())
        return f'kept={kept}/{self.mask.numel()}'


def is_prunable_weight(module: nn.Module, name: str, tensor: Tensor) -> bool:
    r"""The default selection: parameters named :obj:`weight` with at least
    two dimensions (linear, convolution, embedding and spline kernels), never
    those of normalization layers and never buffers (running statistics)."""
    return (name == 'weight' and isinstance(tensor, Tensor)
            and tensor.dim() >= 2 and not isinstance(module, _NORMS))


def _walk(model: nn.Module) -> Iterator[Tuple[str, nn.Module]]:
    r"""Named modules, without the parametrization containers."""
    def visit(prefix: str, module: nn.Module):
        yield prefix, module
        for name, child in module.named_children():
            if isinstance(child, parametrize.ParametrizationList) or (
                    name == 'parametrizations'
                    and parametrize.is_parametrized(module)):
                continue
            yield from visit(f'{prefix}.{name}' if prefix else name, child)

    yield from visit('', model)


def _logical_parameters(module: nn.Module) -> Iterator[Tuple[str, Tensor]]:
    r"""The module's own parameters by logical name, masked or not."""
    for name, param in module._parameters.items():
        if param is not None:
            yield name, param
    if parametrize.is_parametrized(module):
        for name in module.parametrizations.keys():
            yield name, module.parametrizations[name].original


def _join(prefix: str, name: str) -> str:
    return f'{prefix}.{name}' if prefix else name


def select(model: nn.Module, include: Selection = None) -> List[Target]:
    r"""Like :func:`prunable_parameters`, but an empty selection is no
    error."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"'model' must be a torch.nn.Module "
                        f"(got {type(model).__name__})")
    names = None
    if include is None:
        include = is_prunable_weight
    elif isinstance(include, str) or not callable(include):
        names = list([include] if isinstance(include, str) else include)
    targets = []
    for prefix, module in _walk(model):
        for name, param in _logical_parameters(module):
            logical = _join(prefix, name)
            if isinstance(param, nn.parameter.UninitializedParameter):
                raise ValueError(f"'{logical}' is not initialized yet (a lazy "
                                 f"layer): run one forward pass before pruning")
            chosen = logical in names if names is not None else \
                include(module, name, param)
            if not chosen:
                continue
            if not param.is_floating_point():
                raise ValueError(f"'{logical}' is not a floating-point tensor "
                                 f"and cannot be pruned")
            targets.append((logical, module, name))
    if names is not None:
        unknown = sorted(set(names) - {t[0] for t in targets})
        if unknown:
            raise ValueError(f"'include' names parameters that 'model' does "
                             f"not have: {unknown}")
    return targets


def prunable_parameters(model: nn.Module,
                        include: Selection = None) -> List[Target]:
    r"""The tensors of :obj:`model` that pruning acts on, as
    :obj:`(logical name, module, attribute)` triples in module order.

    Args:
        model (torch.nn.Module): Any model.
        include (callable or list of str, optional): A predicate
            :obj:`include(module, name, tensor)`, or the logical names of the
            parameters to prune (e.g. :obj:`["convs.0.lin.weight"]`).
            (default: :func:`is_prunable_weight`)

    Raises:
        ValueError: If nothing is selected.
    """
    targets = select(model, include)
    if not targets:
        raise ValueError(f"'model' ({type(model).__name__}) has nothing to "
                         f"prune: no parameter matches 'include'")
    return targets


def _mask_of(module: nn.Module, name: str) -> Optional[WeightMask]:
    r"""The :class:`WeightMask` parametrizing :obj:`module.<name>`, if any."""
    if not parametrize.is_parametrized(module, name):
        return None
    for parametrization in module.parametrizations[name]:
        if isinstance(parametrization, WeightMask):
            return parametrization
    return None


def _drop_parametrized_tensors(module, state_dict, prefix, local_metadata):
    # Layers that write their weight into the state dict themselves (PyG's
    # Linear) would store the masked tensor next to the parametrization's
    # 'original', which load_state_dict then rejects as unexpected.
    if parametrize.is_parametrized(module):
        for name in module.parametrizations.keys():
            state_dict.pop(prefix + name, None)


def set_mask(module: nn.Module, name: str, mask: Tensor):
    r"""Makes :obj:`mask` the mask of :obj:`module.<name>`, replacing any
    earlier one (the weights under it are kept)."""
    mask = mask.to(torch.bool)
    current = _mask_of(module, name)
    if current is not None:
        current.mask.copy_(mask)
        return
    if not getattr(module, '_pyg_qgnn_mask_hook', False):
        module.register_state_dict_post_hook(_drop_parametrized_tensors)
        module._pyg_qgnn_mask_hook = True
    parametrize.register_parametrization(
        module, name, WeightMask(mask.to(getattr(module, name).device)))


def get_mask(module: nn.Module, name: str) -> Optional[Tensor]:
    r"""The boolean mask of :obj:`module.<name>` (not a copy), or
    :obj:`None` if it is not pruned."""
    mask = _mask_of(module, name)
    return None if mask is None else mask.mask


def get_masks(model: nn.Module) -> Dict[str, Tensor]:
    r"""The boolean mask of every masked tensor of :obj:`model`, by logical
    name (copies)."""
    found = {}
    for prefix, module in _walk(model):
        if parametrize.is_parametrized(module):
            for name in module.parametrizations.keys():
                mask = _mask_of(module, name)
                if mask is not None:
                    found[_join(prefix, name)] = mask.mask.clone()
    return found


def apply_masks(model: nn.Module, masks: Dict[str, Tensor]) -> nn.Module:
    r"""Masks the tensors of :obj:`model` named in :obj:`masks` (say those
    of another model, from :func:`get_masks`). Every name and shape is
    checked before any mask is set. Returns :obj:`model`."""
    resolved = []
    for key, mask in masks.items():
        module, name = resolve(model, key, "'masks'")
        tensor = logical_tensor(module, name)
        if tuple(mask.shape) != tuple(tensor.shape):
            raise ValueError(f"mask of '{key}' has shape {tuple(mask.shape)} "
                             f"but the tensor has {tuple(tensor.shape)}")
        resolved.append((module, name, mask))
    for module, name, mask in resolved:
        set_mask(module, name, mask)
    return model


def resolve(model: nn.Module, key: str, what: str) -> Tuple[nn.Module, str]:
    r"""The module and attribute name of the logical tensor :obj:`key`."""
    prefix, _, name = key.rpartition('.')
    try:
        module = model.get_submodule(prefix)
    except AttributeError:
        module = None
    if module is None or logical_tensor(module, name) is None:
        raise ValueError(f"{what} names '{key}', which 'model' does not have")
    return module, name


def logical_tensor(module: nn.Module, name: str) -> Optional[Tensor]:
    r"""The stored tensor behind :obj:`module.<name>`: the parametrization's
    :obj:`original` for a masked tensor, else the parameter or buffer."""
    if parametrize.is_parametrized(module, name):
        return module.parametrizations[name].original
    if name in module._parameters:
        return module._parameters[name]
    return module._buffers.get(name)


def remove_masks(model: nn.Module, permanent: bool = True) -> nn.Module:
    r"""Removes every mask of :obj:`model`: with :obj:`permanent=True` the
    masked (zeroed) weights become the plain parameters; otherwise the
    weights under the masks come back. A layer regains its own class, so
    :func:`~pyg_qgnn.quantize_model` and :mod:`pyg_qgnn.deploy` see it again.
    The parameters stay the same objects (an optimizer keeps them).
    Returns :obj:`model`."""
    for prefix, module in list(_walk(model)):
        if not parametrize.is_parametrized(module):
            continue
        names = list(module.parametrizations.keys())
        for name in names:
            if _mask_of(module, name) is None or \
                    len(module.parametrizations[name]) > 1:
                raise ValueError(f"'{_join(prefix, name)}' has a "
                                 f"parametrization besides a pruning mask; "
                                 f"remove it first")
        with torch.no_grad():
            originals = {}
            for name in names:
                original = module.parametrizations[name].original
                if permanent:
                    original.copy_(getattr(module, name))
                originals[name] = original
        # Not parametrize.remove_parametrizations: it deletes the property
        # from the class that deep copies of this module share.
        del module._modules['parametrizations']
        module.__class__ = module.__class__.__bases__[0]
        for name, original in originals.items():
            module._parameters[name] = original
    return model


def make_permanent(model: nn.Module) -> nn.Module:
    r"""Folds every pruning mask into its weight: the zeros stay, the masks
    go (pruned weights may then be trained again). Returns :obj:`model`."""
    return remove_masks(model, permanent=True)


def logical_tensors(model: nn.Module) -> Dict[str, Tensor]:
    r"""Every parameter and persistent buffer of :obj:`model` by logical
    name, masks excluded: for a masked tensor, the stored weights under its
    mask (not copies)."""
    found = {}
    for prefix, module in _walk(model):
        for name, param in _logical_parameters(module):
            found[_join(prefix, name)] = param
        for name, buffer in module._buffers.items():
            if buffer is not None and \
                    name not in module._non_persistent_buffers_set:
                found[_join(prefix, name)] = buffer
    return found


def effective_state(model: nn.Module) -> Dict[str, Tensor]:
    r"""The state dict of :obj:`model` as it computes: each masked tensor
    under its logical name with its mask applied, no parametrization
    entries."""
    state = model.state_dict()
    for prefix, module in _walk(model):
        if not parametrize.is_parametrized(module):
            continue
        for name in module.parametrizations.keys():
            inner = _join(_join(prefix, 'parametrizations'), name) + '.'
            for key in [k for k in state if k.startswith(inner)]:
                del state[key]
            state[_join(prefix, name)] = getattr(module, name).detach()
    return state


@torch.no_grad()
def layer_sparsity(model: nn.Module, include: Selection = None
                   ) -> Dict[str, float]:
    r"""The share of zeros of every prunable tensor, by logical name (the
    paper's Figure 2): what pruning achieved per layer."""
    return {key: float((getattr(module, name) == 0).sum()) /
            max(getattr(module, name).numel(), 1)
            for key, module, name in prunable_parameters(model, include)}


@torch.no_grad()
def sparsity(model: nn.Module, include: Selection = None) -> float:
    r"""The share of zeros among all prunable weights of :obj:`model`."""
    zeros = total = 0
    for _, module, name in prunable_parameters(model, include):
        weight = getattr(module, name)
        zeros += int((weight == 0).sum())
        total += weight.numel()
    return zeros / max(total, 1)
