r"""Swap the layers of a PyG model for their quantized twins.

.. code-block:: python

    from torch_geometric.nn.models import GCN
    from pyg_qgnn import quantize_model, QAT

    model = GCN(1433, 16, num_layers=2, out_channels=7)
    ...  # train as usual
    qmodel = quantize_model(model, QAT(bits=8))  # GCNConv -> QuantGCNConv
    ...  # fine-tune qmodel, then pyg_qgnn.deploy.save(qmodel, 'gcn8.safetensors')

A *scheme* (:class:`QAT`; Degree-Quant, A²Q and :class:`Binary` plug in
the same way) says which quantizer stands at each quantization point of a
layer; the registry (:meth:`QuantScheme.twin_class`) says which twin
replaces which float layer.
"""
import copy
import warnings

import torch
from torch import nn
from torch_geometric.nn.conv import MessagePassing

from pyg_qgnn.nn import QuantLayer
from pyg_qgnn.quantizers import Quantizer
from pyg_qgnn.schemes import (  # noqa: F401  (re-exported)
    A2Q,
    QAT,
    QUANTIZED_LAYERS,
    Binary,
    DegreeQuant,
    QuantScheme,
    register_binary_layer,
    register_quantized_layer,
    supported_layers,
)


def quantize_model(model: nn.Module, scheme: QuantScheme,
                   inplace: bool = False, strict: bool = True) -> nn.Module:
    r"""Replaces every supported layer of :obj:`model` by its quantized twin
    under :obj:`scheme`, keeping its weights.

    Args:
        model (torch.nn.Module): A PyG layer or any model built of them
            (e.g. :class:`torch_geometric.nn.models.GCN`).
        scheme (QuantScheme): For instance :obj:`QAT(bits=8)` or
            :obj:`Binary()`.
        inplace (bool, optional): Modify :obj:`model` instead of a copy.
            (default: :obj:`False`)
        strict (bool, optional): Raise on a :class:`MessagePassing` layer
            with no quantized twin, or on a model with nothing to quantize;
            otherwise leave them in float with a warning pointing at the
            caller. (default: :obj:`True`)
    """
    if not isinstance(scheme, QuantScheme):
        raise TypeError(f"'scheme' must be a QuantScheme such as QAT(bits=8) "
                        f"(got {type(scheme).__name__})")
    if not isinstance(model, nn.Module):
        raise TypeError(f"'model' must be a torch.nn.Module "
                        f"(got {type(model).__name__})")
    if not inplace:
        model = copy.deepcopy(model)
    swapped, skipped = [], []
    if scheme.twin_class(type(model)) is not None:  # a bare layer
        model = scheme.convert(model)
        swapped.append('')
    # Float layers a twin keeps (a GINConv's network) are swapped too.
    _swap_children(model, scheme, prefix='', swapped=swapped, skipped=skipped)
    supported = ', '.join(scheme.supported_layers())
    if skipped and strict:
        path, layer = skipped[0]
        raise TypeError(f"cannot quantize layer '{path}' ({layer}): supported "
                        f"layers are {supported}; pass strict=False to keep "
                        f"it in floating point")
    for path, layer in skipped:
        # stacklevel=2: the warning points at the caller's line.
        warnings.warn(f"cannot quantize layer '{path}' ({layer}): supported "
                      f"layers are {supported}; it stays in floating point",
                      stacklevel=2)
    # A model quantized before passes through unchanged.
    if not swapped and not any(isinstance(m, QuantLayer)
                               for m in model.modules()):
        message = (f"'model' ({type(model).__name__}) has no layer that "
                   f"quantize_model can swap; supported layers are "
                   f"{supported}")
        if strict:
            raise TypeError(message)
        warnings.warn(message + '; the model is returned unchanged',
                      stacklevel=2)
    scheme.prepare(model)
    return model


def _swap_children(module: nn.Module, scheme: QuantScheme, prefix: str,
                   swapped: list, skipped: list):
    r"""Swaps supported children of :obj:`module` in place, recording the
    paths swapped and the :class:`MessagePassing` layers with no twin."""
    for name, child in module.named_children():
        path = prefix + name
        if isinstance(child, QuantLayer):
            continue
        if scheme.twin_class(type(child)) is not None:
            twin = scheme.convert(child)
            setattr(module, name, twin)
            swapped.append(path)
            # Float layers the twin keeps (a GINConv's network) join too.
            _swap_children(twin, scheme, path + '.', swapped, skipped)
        elif isinstance(child, MessagePassing):
            skipped.append((path, type(child).__name__))
        else:
            _swap_children(child, scheme, path + '.', swapped, skipped)


@torch.no_grad()
def calibrate(model: nn.Module, *args, **kwargs) -> nn.Module:
    r"""Runs :obj:`model(*args, **kwargs)` once without gradients, the model
    in evaluation mode (no dropout) and its quantizers observing, so that
    post-training quantization gets its ranges; modes are restored after."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    for module in model.modules():
        if isinstance(module, Quantizer):
            module.train()
    try:
        model(*args, **kwargs)
    finally:
        for module, mode in modes.items():
            module.training = mode
    return model
