r"""Exact sparse checkpoints of pruned models, in `safetensors
<https://huggingface.co/docs/safetensors>`_ (loading runs no pickled code).

Algorithm 1 of `Khedri et al. (2025) <https://arxiv.org/abs/2510.22058>`_
stores the non-zero values of each tensor but not where they were, so its
files cannot be loaded back. Here a floating-point tensor is stored as

- **values**: its entries at the kept positions (all entries where that is
  smaller), in its own dtype or, with :obj:`values="int8"`, as 8-bit codes
  with one symmetric scale per output channel (prunable weights only;
  :math:`q = \mathrm{round}(w/s_c)`, restored as :math:`q\,s_c`),
  byte-shuffled and deflated (:mod:`zlib`), which loses nothing;
- **positions**: a bit mask of the kept entries (the pruning mask where
  the tensor is masked, else its non-zeros), deflated either as packed bits
  or as the gaps between kept entries, whichever is smaller.

Tensors too small to gain, and all others (integer buffers), are stored as
they are. A CRC-32 of all stored bytes catches corrupt files.
:func:`load_sparse` restores every tensor of the model exactly as it
computes (with int8 values: exactly the rounded values) and puts the
pruning masks back, so a loaded model fine-tunes with its masks held, like
the saved one.
"""
import json
import math
import os
import zlib
from typing import Dict, Optional, Tuple, Union

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as to_bytes
from torch import Tensor, nn

from pyg_qgnn.prune.masks import (
    apply_masks,
    effective_state,
    get_masks,
    remove_masks,
    select,
)
from pyg_qgnn.quantizers import IntegerQuantizer
from pyg_qgnn.quantizers.packing import pack_bits, unpack_bits

FORMAT = 'pyg_qgnn.sparse'
VERSION = '1'
VALUE_TYPES = ('float32', 'int8')
PathLike = Union[str, os.PathLike]
_DTYPES = {str(d).removeprefix('torch.'): d for d in (
    torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64,
    torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool)}


# Positions ###################################################################

def _deflate(data: bytes) -> Tensor:
    return torch.frombuffer(bytearray(zlib.compress(data, 9)),
                            dtype=torch.uint8)


def _inflate(data: Tensor, limit: int, key: str,
             what: str = 'positions') -> bytes:
    r"""Decompresses at most :obj:`limit` bytes (a corrupt stream cannot
    blow up memory)."""
    if data.dtype != torch.uint8 or data.dim() != 1:
        raise ValueError(f"{what} of '{key}' are corrupt: expected a 1-D "
                         f"uint8 stream")
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data.numpy().tobytes(), limit)
    except zlib.error as e:
        raise ValueError(f"{what} of '{key}' are corrupt: {e}") from None
    if not inflater.eof or inflater.unconsumed_tail:
        raise ValueError(f"{what} of '{key}' are corrupt: the stream is "
                         f"truncated or longer than the tensor")
    return out


def _gap_bytes(mask: Tensor) -> bytes:
    r"""Gaps between kept entries, :math:`g = 255 q + r` written as
    :math:`q` bytes :obj:`255` and one byte :math:`r`."""
    kept = mask.reshape(-1).nonzero().view(-1)
    gaps = torch.diff(kept, prepend=kept.new_tensor([-1])) - 1
    lengths = gaps // 255 + 1
    out = torch.full((int(lengths.sum()), ), 255, dtype=torch.uint8)
    out[lengths.cumsum(0) - 1] = (gaps % 255).to(torch.uint8)
    return out.numpy().tobytes()


def _encode_positions(mask: Tensor) -> Tuple[str, Tensor]:
    bits = _deflate(pack_bits(mask.reshape(-1).to(torch.uint8), 1)
                    .numpy().tobytes())
    gaps = _deflate(_gap_bytes(mask))
    return ('bits', bits) if bits.numel() <= gaps.numel() else ('gaps', gaps)


def _decode_positions(data: Tensor, kind: str, numel: int, kept: int,
                      key: str) -> Tensor:
    if kind == 'bits':
        raw = _inflate(data, math.ceil(numel / 8), key)
        if len(raw) != math.ceil(numel / 8):
            raise ValueError(f"positions of '{key}' are corrupt: "
                             f"{len(raw)} bytes for {numel} entries")
        mask = unpack_bits(torch.frombuffer(bytearray(raw), dtype=torch.uint8),
                           1, numel).to(torch.bool)
    elif kind == 'gaps':
        raw = _inflate(data, numel // 255 + kept + 1, key)
        codes = torch.tensor(list(raw), dtype=torch.long) if len(raw) < 2 \
            else torch.frombuffer(bytearray(raw), dtype=torch.uint8).long()
        ends = (codes < 255).nonzero().view(-1)
        if ends.numel() != kept or (kept and ends[-1] != codes.numel() - 1):
            raise ValueError(f"positions of '{key}' are corrupt: they list "
                             f"{ends.numel()} entries, expected {kept}")
        totals = codes.cumsum(0)[ends]
        gaps = torch.diff(totals, prepend=totals.new_zeros(1))
        index = (gaps + 1).cumsum(0) - 1
        if kept and int(index[-1]) >= numel:
            raise ValueError(f"positions of '{key}' are corrupt: they point "
                             f"past the tensor's {numel} entries")
        mask = torch.zeros(numel, dtype=torch.bool)
        mask[index] = True
    else:
        raise ValueError(f"positions of '{key}' use an unknown encoding "
                         f"{kind!r}")
    if int(mask.sum()) != kept:
        raise ValueError(f"positions of '{key}' are corrupt: {int(mask.sum())} "
                         f"kept entries, expected {kept}")
    return mask


# Values ######################################################################

def _pack_values(values: Tensor) -> Tensor:
    r"""Deflated bytes of :obj:`values`, byte-shuffled (all first bytes,
    then all second bytes, ...): exponents of similar floats repeat, so
    this loses nothing and saves a sixth or more."""
    raw = values.reshape(-1).contiguous().view(torch.uint8)
    shuffled = raw.view(-1, values.element_size()).t().contiguous()
    return _deflate(shuffled.numpy().tobytes())


def _unpack_values(stream: Tensor, dtype: torch.dtype, count: int,
                   key: str) -> Tensor:
    size = torch.empty((), dtype=dtype).element_size()
    raw = _inflate(stream, count * size, key, 'values')
    if len(raw) != count * size:
        raise ValueError(f"values of '{key}' are corrupt: {len(raw)} bytes "
                         f"for {count} entries of {dtype}")
    shuffled = torch.frombuffer(bytearray(raw), dtype=torch.uint8) \
        if raw else torch.empty(0, dtype=torch.uint8)
    return shuffled.view(size, count).t().contiguous().view(dtype).view(-1)


def _int8_codes(tensor: Tensor) -> Tuple[Tensor, Tensor]:
    r"""Codes and per-output-channel scales of :obj:`tensor`."""
    quantizer = IntegerQuantizer(8, symmetric=True, granularity='channel',
                                 channel_axis=0, dynamic=True)
    codes = quantizer.quantize(tensor.float())
    return codes, quantizer.scale.clone()


def _int8_values(codes: Tensor, scale: Tensor, dtype: torch.dtype) -> Tensor:
    r""":math:`q\,s_c`, as :meth:`IntegerQuantizer.dequantize` computes it."""
    view = [-1] + [1] * (codes.dim() - 1)
    return (codes.to(scale.dtype) * scale.view(view)).to(dtype)


def int8_rounded(tensor: Tensor) -> Tensor:
    r""":obj:`tensor` as a checkpoint with int8 values restores it."""
    codes, scale = _int8_codes(tensor)
    return _int8_values(codes, scale, tensor.dtype)


def restored_state(model: nn.Module, values: str = 'float32'
                   ) -> Dict[str, Tensor]:
    r"""The tensors a checkpoint of :obj:`model` restores: its
    :func:`~pyg_qgnn.prune.effective_state`, with the prunable weights
    rounded to int8 codes for :obj:`values="int8"`."""
    state = effective_state(model)
    if values == 'int8':
        for key, _, _ in select(model):
            state[key] = int8_rounded(state[key])
    return state


# Saving ######################################################################

#: Bytes the safetensors header spends on one more stored tensor, about.
_ENTRY_BYTES = 80


def _encode(model: nn.Module, values: str) -> Tuple[Dict[str, Tensor], dict]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"'model' must be a torch.nn.Module "
                        f"(got {type(model).__name__})")
    if values not in VALUE_TYPES:
        raise ValueError(f"'values' must be one of {VALUE_TYPES} "
                         f"(got {values!r})")
    masks = get_masks(model)
    weights = {key for key, _, _ in select(model)}
    tensors, info = {}, {}
    for key, tensor in effective_state(model).items():
        tensor = tensor.detach().cpu().contiguous()
        mask = masks.get(key)
        entry = dict(shape=list(tensor.shape),
                     dtype=str(tensor.dtype).removeprefix('torch.'))
        if not tensor.is_floating_point() or tensor.numel() == 0:
            tensors['dense/' + key] = tensor.clone()
            continue
        stored = tensor
        if values == 'int8' and key in weights:
            stored, scale = _int8_codes(tensor)
            tensors['scale/' + key] = scale
            entry['int8'] = True
        positions = mask if mask is not None else tensor != 0
        kind, packed = _encode_positions(positions)
        sparse = _pack_values(stored[positions])
        dense = _pack_values(stored)
        raw_bytes = stored.numel() * stored.element_size()
        if mask is not None or \
                sparse.numel() + packed.numel() + _ENTRY_BYTES < dense.numel():
            tensors['values/' + key] = sparse
            tensors['positions/' + key] = packed
            entry.update(kept=int(positions.sum()), positions=kind)
            if mask is not None:
                entry['masked'] = True
        elif 'int8' in entry or dense.numel() + _ENTRY_BYTES < raw_bytes:
            tensors['values/' + key] = dense
        else:
            tensors['dense/' + key] = tensor.clone()
            continue
        info[key] = entry
    return tensors, info


def _checksum(tensors: Dict[str, Tensor]) -> str:
    crc = 0
    for key in sorted(tensors):
        raw = tensors[key].reshape(-1).contiguous().view(torch.uint8)
        crc = zlib.crc32(raw.numpy().tobytes(), crc)
    return f'{crc:08x}'


def to_sparse_bytes(model: nn.Module, values: str = 'float32') -> bytes:
    r"""The file :func:`save_sparse` writes, as bytes."""
    tensors, info = _encode(model, values)
    metadata = dict(format=FORMAT, version=VERSION, tensors=json.dumps(
        info, separators=(',', ':')), crc32=_checksum(tensors))
    return to_bytes(tensors, metadata=metadata)


def save_sparse(model: nn.Module, path: PathLike,
                values: str = 'float32') -> int:
    r"""Writes :obj:`model` (pruned or not) to :obj:`path` as an exact sparse
    checkpoint and returns the file size in bytes.

    Args:
        model (torch.nn.Module): Any model; masks of
            :func:`~pyg_qgnn.prune.magnitude_prune` are kept.
        path (str or os.PathLike): The file to write.
        values (str, optional): :obj:`"float32"` keeps the values as they
            are (each tensor in its own dtype); :obj:`"int8"` stores the
            weights as 8-bit codes with per-channel scales.
            (default: :obj:`"float32"`)
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"'path' {path!r}: the folder {folder!r} does "
                                f"not exist")
    payload = to_sparse_bytes(model, values)
    with open(path, 'wb') as f:
        f.write(payload)
    return len(payload)


def checkpoint_bytes(model: nn.Module, values: str = 'float32') -> int:
    r"""The size in bytes of the file :func:`save_sparse` would write."""
    return len(to_sparse_bytes(model, values))


# Loading #####################################################################

def _read(path: PathLike) -> Tuple[Dict[str, Tensor], dict]:
    name = os.fspath(path)
    try:
        with safe_open(name, framework='pt') as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except FileNotFoundError:
        raise
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ValueError(f"'path' {name!r} is not a readable safetensors "
                         f"checkpoint: {e}") from None
    if metadata.get('format') != FORMAT:
        raise ValueError(f"'path' {name!r} was not written by "
                         f"pyg_qgnn.prune.save_sparse (metadata format "
                         f"{metadata.get('format')!r}, expected {FORMAT!r})")
    if metadata.get('version') != VERSION:
        raise ValueError(f"'path' {name!r} has checkpoint version "
                         f"{metadata.get('version')!r}; expected {VERSION!r}")
    try:
        info = json.loads(metadata['tensors'])
        if not isinstance(info, dict):
            raise ValueError('not a JSON object')
    except (KeyError, ValueError) as e:
        raise ValueError(f"'path' {name!r} has a corrupt 'tensors' metadata "
                         f"entry: {e}") from None
    if metadata.get('crc32') != _checksum(tensors):
        raise ValueError(f"'path' {name!r} is corrupt: its tensors do not "
                         f"match their CRC-32 checksum")
    return tensors, info


def _decode(key: str, entry: dict, tensors: Dict[str, Tensor]
            ) -> Tuple[Tensor, Optional[Tensor]]:
    r"""The tensor :obj:`key` and its mask, if it was masked."""
    try:
        shape = torch.Size(entry['shape'])
        dtype = _DTYPES[entry['dtype']]
        int8 = bool(entry.get('int8', False))
        stored_dtype = torch.int8 if int8 else dtype
        positions = None
        if 'kept' in entry:
            kept = int(entry['kept'])
            positions = _decode_positions(tensors['positions/' + key],
                                          entry['positions'], shape.numel(),
                                          kept, key)
            full = torch.zeros(shape.numel(), dtype=stored_dtype)
            full[positions] = _unpack_values(tensors['values/' + key],
                                             stored_dtype, kept, key)
        else:
            full = _unpack_values(tensors['values/' + key], stored_dtype,
                                  shape.numel(), key)
        full = full.view(shape)
        if int8:
            scale = tensors['scale/' + key]
            if scale.dim() != 1 or scale.numel() != shape[0]:
                raise ValueError(f'{scale.numel()} scales for {shape[0]} '
                                 f'channels')
            full = _int8_values(full, scale, dtype)
    except (KeyError, TypeError, RuntimeError, IndexError) as e:
        raise ValueError(f"checkpoint entry of '{key}' is corrupt: "
                         f"{e.__class__.__name__}: {e}") from None
    masked = entry.get('masked', False)
    return full, positions.view(shape) if masked else None


@torch.no_grad()
def load_sparse(path: PathLike, model: nn.Module) -> nn.Module:
    r"""Loads a checkpoint written by :func:`save_sparse` into :obj:`model`,
    which must have the same architecture (pruned or not). Every tensor is
    restored exactly, the saved masks replace the model's own, and nothing
    is written into :obj:`model` unless the whole file is valid. Returns
    :obj:`model`."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"'model' must be a torch.nn.Module "
                        f"(got {type(model).__name__})")
    tensors, info = _read(path)
    own = effective_state(model)
    saved = set(info) | {k[len('dense/'):] for k in tensors
                         if k.startswith('dense/')}
    if saved != set(own):
        raise ValueError(f"checkpoint does not match 'model': missing "
                         f"{sorted(set(own) - saved)}, unexpected "
                         f"{sorted(saved - set(own))}; build 'model' with "
                         f"the architecture of the saved one")
    state, masks = {}, {}
    for key in own:
        target = own[key]
        if key in info:
            entry = info[key]
            if not isinstance(entry, dict):
                raise ValueError(f"checkpoint entry of '{key}' is corrupt")
            state[key], mask = _decode(key, entry, tensors)
        else:
            state[key], mask = tensors['dense/' + key], None
        # An empty target is lazy state that takes the checkpoint's shape.
        if target.numel() and state[key].shape != target.shape:
            raise ValueError(f"'{key}' has shape {tuple(state[key].shape)} in "
                             f"the checkpoint but {tuple(target.shape)} in "
                             f"'model'")
        if state[key].dtype != target.dtype:
            raise ValueError(f"'{key}' is {state[key].dtype} in the checkpoint "
                             f"but {target.dtype} in 'model'")
        if mask is not None:
            masks[key] = mask
    remove_masks(model, permanent=False)
    model.load_state_dict(state)
    return apply_masks(model, masks)
