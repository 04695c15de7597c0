r"""What every quantizer shares: on/off switches and lazily shaped state."""
from typing import Tuple

import torch
from torch import nn


class LazyStateMixin:
    r"""For modules whose buffers take their shape on first use (a range per
    channel, per node, ...).

    Loading a checkpoint adopts the stored shapes. A checkpoint that holds
    none of the module's lazy state (say a float model's, loaded into its
    quantized twin) is accepted and the state is created on first use; one
    that holds only part of it is reported as missing keys.
    """
    _lazy_state: Tuple[str, ...] = ()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,
                              missing_keys, unexpected_keys, error_msgs):
        for name in self._lazy_state:
            key = prefix + name
            if key in state_dict and isinstance(state_dict[key], torch.Tensor):
                current = getattr(self, name)
                fresh = torch.empty(state_dict[key].shape, dtype=current.dtype,
                                    device=current.device)
                if isinstance(current, nn.Parameter):
                    current.data = fresh
                else:
                    setattr(self, name, fresh)
        own_missing = []
        super()._load_from_state_dict(state_dict, prefix, local_metadata,
                                      strict, own_missing, unexpected_keys,
                                      error_msgs)
        lazy = {prefix + name for name in self._lazy_state}
        if not lazy.issubset(own_missing):
            missing_keys.extend(own_missing)
        else:
            missing_keys.extend(k for k in own_missing if k not in lazy)


class Quantizer(LazyStateMixin, nn.Module):
    r"""Base class of all quantizers.

    Two switches, flipped for a whole model with :obj:`model.apply(...)`:
    :func:`disable_fake_quant` makes :meth:`forward` the identity (the float
    model), and :func:`freeze_observer` stops range updates in training.
    """
    def __init__(self):
        super().__init__()
        self.fake_quant_enabled = True
        self.observer_enabled = True


def _switch(attr: str, value: bool):
    def apply(module: nn.Module) -> nn.Module:
        if isinstance(module, Quantizer):
            setattr(module, attr, value)
        return module

    apply.__name__ = f"{'enable' if value else 'disable'}_{attr}"
    return apply


enable_fake_quant = _switch('fake_quant_enabled', True)
enable_fake_quant.__doc__ = 'Turns fake quantization on: ``model.apply(enable_fake_quant)``.'
disable_fake_quant = _switch('fake_quant_enabled', False)
disable_fake_quant.__doc__ = 'Turns fake quantization off (float model): ``model.apply(disable_fake_quant)``.'
freeze_observer = _switch('observer_enabled', False)
freeze_observer.__doc__ = 'Stops range updates during training: ``model.apply(freeze_observer)``.'
unfreeze_observer = _switch('observer_enabled', True)
unfreeze_observer.__doc__ = 'Resumes range updates during training: ``model.apply(unfreeze_observer)``.'
