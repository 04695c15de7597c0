r"""Whole deployed models in one safetensors file: their buffers, plus a
format name, a version and the constructor's keyword arguments as JSON
metadata. Reading runs no pickled code."""
import json
import os
from typing import Dict, Tuple, Type, TypeVar, Union

from safetensors import SafetensorError, safe_open
from safetensors.torch import save as to_bytes
from torch import Tensor, nn

PathLike = Union[str, os.PathLike]
Model = TypeVar('Model', bound=nn.Module)


def save_model(model: nn.Module, path: PathLike, fmt: str, version: str,
               config: dict) -> int:
    r"""Writes the buffers of :obj:`model` and its :obj:`config` to
    :obj:`path`; returns the file size in bytes."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"'path' {path!r}: the folder {folder!r} "
                                f"does not exist")
    tensors = {name: buffer.contiguous()
               for name, buffer in model.named_buffers()}
    payload = to_bytes(tensors, metadata=dict(
        format=fmt, version=version, config=json.dumps(config)))
    with open(path, 'wb') as f:  # its mode follows the umask
        f.write(payload)
    return len(payload)


def load_model(cls: Type[Model], path: PathLike, fmt: str, version: str
               ) -> Tuple[Model, Dict[str, Tensor]]:
    r"""A :obj:`cls` built from the config of a file written by
    :func:`save_model` with :obj:`fmt` and :obj:`version`, and the file's
    tensors (for the caller to check and set). Raises :class:`ValueError`
    naming :obj:`path` for an unreadable file, another format or version, or
    a corrupt config."""
    path = os.fspath(path)
    try:
        with safe_open(path, framework='pt') as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except FileNotFoundError:
        raise
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"'path' {path!r} is not a readable safetensors "
                         f"file: {e}") from None
    if (metadata.get('format'), metadata.get('version')) != (fmt, version):
        raise ValueError(f"'path' {path!r} was not written by "
                         f"{cls.__name__}.save (format "
                         f"{metadata.get('format')!r}, version "
                         f"{metadata.get('version')!r})")
    try:
        model = cls(**json.loads(metadata['config']))
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"'path' {path!r} has a corrupt config entry: "
                         f"{e}") from None
    return model, tensors


def set_buffers(model: nn.Module, tensors: Dict[str, Tensor], path: str,
                fixed_shapes: Tuple[str, ...]):
    r"""Sets every buffer of :obj:`model` from :obj:`tensors`, checking its
    dtype, and its shape for the buffers named in :obj:`fixed_shapes`
    (those whose size the config alone determines)."""
    for name, buffer in model.named_buffers():
        if name not in tensors:
            raise ValueError(f"'path' {path!r} lacks '{name}'")
        value = tensors[name]
        fixed = name in fixed_shapes
        if value.dtype != buffer.dtype or (fixed and
                                           value.shape != buffer.shape):
            raise ValueError(f"'{name}' in {path!r} has the wrong "
                             f"dtype/shape: {value.dtype} "
                             f"{tuple(value.shape)}, expected {buffer.dtype} "
                             f"{tuple(buffer.shape) if fixed else ''}")
        setattr(model, name, value)
