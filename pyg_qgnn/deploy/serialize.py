r"""Safe, compact checkpoints of quantized models.

:func:`save` stores every quantized weight as bit-packed integer codes (1, 2,
4 or 8 bits per code; 3-bit codes take 4) next to its scale and zero point,
and everything else as it is, in a `safetensors <https://huggingface.co/docs/
safetensors>`_ file: loading runs no pickled code. :func:`load` restores a
model whose evaluation output equals the saved model's exactly.
"""
import json
import os
from typing import Dict, Union

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as to_bytes
from torch import Tensor, nn

from pyg_qgnn.quantizers import IntegerQuantizer
from pyg_qgnn.quantizers.packing import container_bits, pack_bits, unpack_bits

FORMAT = 'pyg_qgnn'
VERSION = '1'
PathLike = Union[str, os.PathLike]


def _packed_weights(model: nn.Module) -> Dict[str, tuple]:
    r"""``{state-dict key: (module, quantizer)}`` of weights saved as codes."""
    found = {}
    for name, module in model.named_modules():
        quantizer = getattr(module, 'weight_quantizer', None)
        weight = getattr(module, 'weight', None)
        if (isinstance(quantizer, IntegerQuantizer)
                and quantizer.fake_quant_enabled
                and isinstance(weight, nn.Parameter)
                and not isinstance(weight, nn.parameter.UninitializedParameter)):
            found[f'{name}.weight' if name else 'weight'] = (module, quantizer)
    return found


@torch.no_grad()
def save(model: nn.Module, path: PathLike) -> int:
    r"""Writes :obj:`model` to :obj:`path` and returns the file size in bytes.

    Quantized weights are stored as packed codes; all other parameters and
    buffers (biases, quantizer ranges, float layers) as they are. Only the
    model's state is read, so a model in training mode is saved exactly as
    in evaluation mode (weight ranges are taken from the weights in both).
    The file is written like any other (its mode follows the umask).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"'model' must be a torch.nn.Module "
                        f"(got {type(model).__name__})")
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"'path' {path!r}: the folder {folder!r} does "
                                f"not exist")
    packed = {}
    tensors = {}
    for key, (module, quantizer) in _packed_weights(model).items():
        codes = quantizer.quantize(module.weight)  # also settles its range
        width = container_bits(quantizer.bits)
        unsigned = codes.to(torch.int16) - quantizer.qmin
        tensors[key + '.codes'] = pack_bits(unsigned.reshape(-1), width)
        packed[key] = dict(shape=list(codes.shape), bits=quantizer.bits,
                           width=width, qmin=quantizer.qmin)
    for key, value in model.state_dict().items():
        if key not in packed:
            # safetensors refuses shared or strided storage.
            tensors[key] = value.detach().cpu().contiguous().clone()
    metadata = dict(format=FORMAT, version=VERSION, packed=json.dumps(packed))
    payload = to_bytes({k: v.cpu() for k, v in tensors.items()},
                       metadata=metadata)
    with open(path, 'wb') as f:
        f.write(payload)
    return len(payload)


def _read(path: PathLike):
    try:
        with safe_open(os.fspath(path), framework='pt') as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except FileNotFoundError:
        raise
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"'path' {os.fspath(path)!r} is not a readable "
                         f"safetensors checkpoint: {e}") from None
    if metadata.get('format') != FORMAT:
        raise ValueError(f"'path' {os.fspath(path)!r} was not written by "
                         f"pyg_qgnn.deploy.save (metadata format "
                         f"{metadata.get('format')!r}, expected {FORMAT!r})")
    if metadata.get('version') != VERSION:
        raise ValueError(f"checkpoint version {metadata.get('version')!r} is "
                         f"not supported (expected {VERSION!r})")
    try:
        packed = json.loads(metadata['packed'])
    except (KeyError, json.JSONDecodeError) as e:
        raise ValueError(f"'path' {os.fspath(path)!r} has a corrupt "
                         f"'packed' metadata entry: {e}") from None
    return tensors, packed


@torch.no_grad()
def load(path: PathLike, model: nn.Module) -> nn.Module:
    r"""Loads a checkpoint written by :func:`save` into :obj:`model`, which
    must have the same architecture and quantizers (build it the same way,
    e.g. :obj:`quantize_model(GCN(...), QAT(bits=8))`). Returns :obj:`model`.
    """
    tensors, packed = _read(path)
    targets = _packed_weights(model)
    _check_structure(model, tensors, packed)
    if set(packed) != set(targets):
        raise ValueError(f"checkpoint packs the weights {sorted(packed)} but "
                         f"'model' quantizes {sorted(targets)}: build 'model' "
                         f"with the same quantization scheme")
    state = {k: v for k, v in tensors.items()
             if k[:-len('.codes')] not in packed}
    _check_compatible(model, state, packed, targets)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise ValueError(f"checkpoint does not match 'model': {e}") from None
    missing = [k for k in missing if k not in packed]
    if missing or unexpected:
        raise ValueError(f"checkpoint does not match 'model': missing keys "
                         f"{missing}, unexpected keys {unexpected}")
    for key, info in packed.items():
        module, quantizer = targets[key]
        codes = _unpack(tensors, key, info, module.weight.shape)
        module.weight.copy_(quantizer.dequantize(codes.to(module.weight.device)))
        quantizer.pin_range(module.weight)
    return model


def _layers(keys) -> set:
    return {key.rsplit('.', 1)[0] if '.' in key else '' for key in keys}


def _check_structure(model: nn.Module, tensors: Dict[str, Tensor],
                     packed: Dict[str, dict]):
    r"""Fails, naming the layers on each side, when the checkpoint's layers
    are not the model's (another depth, other layer names)."""
    saved = {key[:-len('.codes')] if key[:-len('.codes')] in packed else key
             for key in tensors}
    own = set(model.state_dict())
    # Quantizer state is compared by _check_compatible; layers are compared
    # by their parameters, so a different scheme is not reported as a
    # different structure.
    params = {key for key in own if not _is_quantizer_state(key)}
    saved_params = {key for key in saved if not _is_quantizer_state(key)}
    only_saved = sorted(_layers(saved_params - params) - _layers(params))
    only_model = sorted(_layers(params - saved_params) - _layers(saved_params))
    if only_saved or only_model:
        raise ValueError(f"checkpoint and 'model' have different layers: only "
                         f"in the checkpoint {only_saved}, only in 'model' "
                         f"{only_model}; build 'model' with the same "
                         f"architecture as the saved one")


def _is_quantizer_state(key: str) -> bool:
    return '_quantizer.' in key


def _check_compatible(model: nn.Module, state: Dict[str, Tensor],
                      packed: Dict[str, dict], targets: Dict[str, tuple]):
    r"""Fails before anything is overwritten if shapes or bit widths differ."""
    params = dict(model.named_parameters())
    shapes = {k: tuple(v.shape) for k, v in state.items() if k in params}
    shapes.update({k: tuple(info['shape']) for k, info in packed.items()})
    for key, shape in shapes.items():
        # An empty parameter is lazy state (a learned step, an A2Q table)
        # that takes the checkpoint's shape; its module checks it on load.
        if key in params and params[key].numel() and \
                tuple(params[key].shape) != shape:
            raise ValueError(f"'{key}' has shape {shape} in the checkpoint but "
                             f"{tuple(params[key].shape)} in 'model'")
    for key, info in packed.items():
        quantizer = targets[key][1]
        if (info.get('bits'), info.get('qmin')) != (quantizer.bits,
                                                    quantizer.qmin):
            raise ValueError(f"'{key}' was saved as {info.get('bits')}-bit codes "
                             f"from {info.get('qmin')} but 'model' quantizes it "
                             f"to {quantizer.bits} bits from {quantizer.qmin}: "
                             f"build 'model' with the same quantization scheme")


def _unpack(tensors: Dict[str, Tensor], key: str, info: dict,
            shape: torch.Size) -> Tensor:
    try:
        unsigned = unpack_bits(tensors[key + '.codes'], info['width'],
                               shape.numel())
    except (KeyError, ValueError, TypeError) as e:
        raise ValueError(f"packed codes of '{key}' are corrupt: {e}") from None
    return (unsigned.to(torch.int16) + info['qmin']).reshape(shape)
