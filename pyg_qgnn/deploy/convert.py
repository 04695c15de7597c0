r"""From a trained quantization-aware model to its deployed form.

.. code-block:: python

    from pyg_qgnn import deploy

    model.eval()                          # trained binary (or quantized) model
    deployed = deploy.convert(model)      # packed codes, integer kernels
    deploy.nbytes(deployed)               # what it really holds
    deploy.save(deployed, 'model.safetensors')

:func:`convert` walks the model as :func:`~pyg_qgnn.quantize_model` does and
replaces every trained twin by the deployed layer registered for its class
(:func:`register_deployed_layer`), built by
:meth:`DeployedLayer.from_trained`. Binary layers register theirs in
:mod:`pyg_qgnn.deploy.binary`, the integer layers of QAT, Degree-Quant and
A²Q models in :mod:`pyg_qgnn.deploy.integer`.
"""
import copy
from typing import Dict, Type

import torch
from torch import nn

from pyg_qgnn.nn import QuantLayer


class DeployedLayer(nn.Module):
    r"""Base class of inference-only layers that store codes and compute
    with them.

    A subclass builds itself from a trained twin in :meth:`from_trained`,
    holds its codes and scales as buffers (so :func:`nbytes` and
    :func:`~pyg_qgnn.deploy.save` see exactly what it stores), runs its
    :meth:`forward` without autograd, and names in its :obj:`__repr__`
    whatever it keeps in floating point. It is always in evaluation mode:
    :meth:`train` leaves it there.
    """
    def train(self, mode: bool = True) -> 'DeployedLayer':
        return super().train(False)

    def reset_parameters(self):
        r"""Nothing to reset: a deployed layer holds trained values only."""

    @classmethod
    def from_trained(cls, twin: nn.Module) -> 'DeployedLayer':
        r"""The deployed form of the trained (evaluation-mode) :obj:`twin`."""
        raise TypeError(f"'{cls.__name__}' must define from_trained()")


#: Trained twin class -> its deployed layer (exact class match).
DEPLOYED_LAYERS: Dict[Type[nn.Module], Type[DeployedLayer]] = {}


def register_deployed_layer(twin_cls: Type[nn.Module],
                            deployed_cls: Type[DeployedLayer]):
    r"""Makes :func:`convert` replace :obj:`twin_cls` layers by
    :obj:`deployed_cls.from_trained(layer)`."""
    if not isinstance(twin_cls, type) or not issubclass(twin_cls, nn.Module):
        raise TypeError(f"'twin_cls' must be a torch.nn.Module subclass "
                        f"(got {twin_cls!r})")
    if not (isinstance(deployed_cls, type)
            and issubclass(deployed_cls, DeployedLayer)):
        raise TypeError(f"'deployed_cls' must be a DeployedLayer subclass "
                        f"(got {deployed_cls!r})")
    DEPLOYED_LAYERS[twin_cls] = deployed_cls


def deployable_layers() -> list:
    r"""Names of the layers :func:`convert` can deploy."""
    return sorted(cls.__name__ for cls in DEPLOYED_LAYERS)


@torch.no_grad()
def convert(model: nn.Module, inplace: bool = False) -> nn.Module:
    r"""Replaces every trained quantized or binary layer of :obj:`model` by
    its deployed form; float layers (say a real-valued classifier head)
    stay as they are.

    Args:
        model (torch.nn.Module): A trained model (or single layer) in
            evaluation mode, built from layers with a registered deployed
            form (:func:`deployable_layers`).
        inplace (bool, optional): Modify :obj:`model` instead of a copy.
            (default: :obj:`False`)

    Raises:
        ValueError: If :obj:`model` is in training mode, or a layer cannot
            be deployed as trained (a quantizer that never saw data, a
            setting without an integer form); the error names the layer.
        TypeError: If a quantized layer has no deployed form.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"'model' must be a torch.nn.Module "
                        f"(got {type(model).__name__})")
    training = [name or type(model).__name__
                for name, module in model.named_modules() if module.training]
    if training:
        raise ValueError(f"'model' is in training mode ({training[0]}); call "
                         f"model.eval() before convert(): a deployed model is "
                         f"inference-only and uses the running statistics "
                         f"of its normalization layers")
    if not inplace:
        model = copy.deepcopy(model, memo=_shared_sparse_tensors(model))
    if type(model) in DEPLOYED_LAYERS:
        return _deployed(model, '')
    _check_deployable(model, '')
    _swap_children(model, '')
    return model


def _shared_sparse_tensors(model: nn.Module) -> dict:
    r"""A :func:`copy.deepcopy` memo that keeps the sparse tensors modules
    hold as attributes (a cached :class:`GCNConv` adjacency) shared: torch
    cannot deep-copy a sparse CSR tensor, and a cache needs no copy."""
    memo = {}
    pending = [value for module in model.modules()
               for value in vars(module).values()]
    while pending:
        value = pending.pop()
        if isinstance(value, (tuple, list)):
            pending.extend(value)
        elif isinstance(value, torch.Tensor) and \
                value.layout != torch.strided:
            memo[id(value)] = value
    return memo


def _check_deployable(module: nn.Module, path: str):
    r"""Fails before anything is swapped if a quantized layer has no
    deployed form."""
    if type(module) in DEPLOYED_LAYERS or isinstance(module, DeployedLayer):
        return
    if isinstance(module, QuantLayer):
        supported = ', '.join(deployable_layers()) or 'none registered'
        raise TypeError(f"cannot deploy layer '{path or '(model)'}' "
                        f"({type(module).__name__}): it has no deployed form; "
                        f"layers with one are {supported}")
    for name, child in module.named_children():
        _check_deployable(child, f'{path}.{name}' if path else name)


def _deployed(layer: nn.Module, path: str) -> 'DeployedLayer':
    try:
        return DEPLOYED_LAYERS[type(layer)].from_trained(layer)
    except (ValueError, TypeError) as error:
        # Name the layer: a model has many of each class.
        raise type(error)(f"cannot deploy layer '{path or '(model)'}' "
                          f"({type(layer).__name__}): {error}") from error


def _swap_children(module: nn.Module, path: str):
    for name, child in module.named_children():
        child_path = f'{path}.{name}' if path else name
        if type(child) in DEPLOYED_LAYERS:
            setattr(module, name, _deployed(child, child_path))
        elif not isinstance(child, DeployedLayer):
            _swap_children(child, child_path)


def nbytes(model: nn.Module) -> int:
    r"""Bytes of every parameter and buffer :obj:`model` holds (shared
    tensors once): for a deployed model, its packed codes, scales and
    whatever stays in floating point."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"'model' must be a torch.nn.Module "
                        f"(got {type(model).__name__})")
    seen = set()
    total = 0
    tensors = list(model.parameters()) + list(model.buffers())
    for tensor in tensors:
        if isinstance(tensor, nn.parameter.UninitializedParameter):
            raise ValueError("'model' has uninitialized (lazy) parameters; "
                             "run it once before counting its bytes")
        key = (tensor.data_ptr(), tensor.dtype, tensor.numel())
        if key not in seen:
            seen.add(key)
            total += tensor.numel() * tensor.element_size()
    return total
