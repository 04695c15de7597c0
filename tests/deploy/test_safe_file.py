import pytest
import torch
from torch import nn

from pyg_qgnn.deploy.safe_file import load_model, save_model


class Holder(nn.Module):
    def __init__(self, size: int):
        super().__init__()
        self.size = size
        self.register_buffer('values', torch.zeros(size))


def test_round_trip(tmp_path):
    model = Holder(3)
    model.values = torch.tensor([1.0, -2.0, 3.5])
    path = tmp_path / 'h.safetensors'
    size = save_model(model, path, 'fmt', '1', dict(size=3))
    assert size == path.stat().st_size
    loaded, tensors = load_model(Holder, path, 'fmt', '1')
    assert isinstance(loaded, Holder) and loaded.size == 3
    assert torch.equal(tensors['values'], model.values)


def test_errors_name_the_path(tmp_path):
    path = tmp_path / 'h.safetensors'
    save_model(Holder(2), path, 'fmt', '1', dict(size=2))
    with pytest.raises(ValueError, match="not written by Holder.save"):
        load_model(Holder, path, 'fmt', '2')
    with pytest.raises(ValueError, match="not written by Holder.save"):
        load_model(Holder, path, 'other', '1')
    save_model(Holder(2), path, 'fmt', '1', dict(wrong=2))
    with pytest.raises(ValueError, match='corrupt config'):
        load_model(Holder, path, 'fmt', '1')
    junk = tmp_path / 'junk.safetensors'
    junk.write_bytes(b'\x00' * 40)
    with pytest.raises(ValueError, match='not a readable safetensors'):
        load_model(Holder, junk, 'fmt', '1')
    with pytest.raises(FileNotFoundError, match='does not exist'):
        save_model(Holder(2), tmp_path / 'no' / 'h.st', 'fmt', '1', {})
