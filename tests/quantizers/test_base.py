"""Tests of the shared quantizer machinery (pyg_qgnn.quantizers.base)."""
import pytest
import torch
from torch import nn

from pyg_qgnn.quantizers import (
    IntegerQuantizer,
    Quantizer,
    disable_fake_quant,
    enable_fake_quant,
    freeze_observer,
    unfreeze_observer,
)


class Wrapper(nn.Module):
    """A float layer followed by a quantizer, like a quantized layer."""
    def __init__(self, **kwargs):
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.quant = IntegerQuantizer(**kwargs)

    def forward(self, x):
        return self.quant(self.lin(x))


QUANT_KEYS = {'quant.scale', 'quant.zero_point', 'quant.observer.min_val',
              'quant.observer.max_val'}


def test_integer_quantizer_is_a_quantizer_with_switches_on():
    q = IntegerQuantizer()
    assert isinstance(q, Quantizer)
    assert q.fake_quant_enabled and q.observer_enabled


# --------------------------------------------------------------------------
# Switches
# --------------------------------------------------------------------------
def test_disable_fake_quant_makes_forward_the_identity():
    model = Wrapper(bits=2)
    x = torch.tensor([[-1.3, 0.27, 5.1], [0.0, 2.2, -0.9]])
    model.quant(x)  # calibrated
    model.apply(disable_fake_quant)
    assert model.quant.fake_quant_enabled is False
    assert model.quant(x) is x
    h = model.lin(x)
    assert torch.equal(model(x), h)


def test_disable_fake_quant_before_calibration_leaves_no_range():
    q = IntegerQuantizer(bits=2)
    q.apply(disable_fake_quant)
    x = torch.tensor([0.3, -1.7])
    assert q(x) is x
    assert not q.initialized


def test_enable_fake_quant_restores_quantization():
    model = Wrapper(bits=2).eval()
    x = torch.tensor([-1.3, 0.27, 5.1, 0.8])
    quantized = model.quant(x)
    assert not torch.equal(quantized, x)  # 2 bits cannot hold these values
    model.apply(disable_fake_quant)
    model.apply(enable_fake_quant)
    assert model.quant.fake_quant_enabled is True
    assert torch.equal(model.quant(x), quantized)


def test_freeze_observer_stops_range_updates_in_training():
    model = Wrapper(bits=8, observer='abs')
    q = model.quant
    q(torch.tensor([-1.0, 1.0]))
    model.apply(freeze_observer)
    assert model.training and q.observer_enabled is False
    scale = q.scale.clone()
    lo, hi = q.observer.min_val.clone(), q.observer.max_val.clone()
    q(torch.tensor([-50.0, 80.0]))
    assert torch.equal(q.scale, scale)
    assert torch.equal(q.observer.min_val, lo)
    assert torch.equal(q.observer.max_val, hi)


def test_unfreeze_observer_resumes_range_updates():
    q = IntegerQuantizer(bits=8, observer='abs')
    q(torch.tensor([-1.0, 1.0]))
    q.apply(freeze_observer)
    q.apply(unfreeze_observer)
    assert q.observer_enabled is True
    q(torch.tensor([-50.0, 80.0]))
    assert q.scale.item() == pytest.approx(130.0 / 255)


def test_switches_leave_non_quantizer_modules_alone():
    model = Wrapper()
    model.apply(disable_fake_quant)
    model.apply(freeze_observer)
    assert not hasattr(model.lin, 'fake_quant_enabled')
    assert not hasattr(model.lin, 'observer_enabled')
    assert not hasattr(model, 'fake_quant_enabled')


@pytest.mark.parametrize('fn,name', [
    (enable_fake_quant, 'enable_fake_quant_enabled'),
    (disable_fake_quant, 'disable_fake_quant_enabled'),
    (freeze_observer, 'disable_observer_enabled'),
    (unfreeze_observer, 'enable_observer_enabled'),
])
def test_switches_return_the_module_for_apply(fn, name):
    q = IntegerQuantizer()
    assert fn(q) is q
    assert fn.__doc__


# --------------------------------------------------------------------------
# Lazy state and checkpoint loading
# --------------------------------------------------------------------------
def test_quantizer_state_is_in_state_dict():
    model = Wrapper(granularity='channel')
    model(torch.randn(4, 3))
    sd = model.state_dict()
    assert QUANT_KEYS <= set(sd)
    assert sd['quant.scale'].shape == (2, )
    assert sd['quant.observer.max_val'].shape == (2, )


def test_lazy_shapes_adopted_from_checkpoint():
    src = Wrapper(granularity='channel')
    src(torch.randn(4, 3))
    dst = Wrapper(granularity='channel')
    assert dst.quant.scale.shape == (0, )
    result = dst.load_state_dict(src.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    for key in QUANT_KEYS:
        assert torch.equal(dst.state_dict()[key], src.state_dict()[key]), key
    src.eval()
    dst.eval()
    x = torch.randn(6, 3)
    assert torch.equal(dst(x), src(x))


def test_loading_float_checkpoint_without_quantizer_keys_is_accepted():
    float_model = nn.Module()
    float_model.lin = nn.Linear(3, 2)
    sd = float_model.state_dict()
    assert set(sd) == {'lin.weight', 'lin.bias'}
    model = Wrapper()
    result = model.load_state_dict(sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(model.lin.weight, float_model.lin.weight)
    assert not model.quant.initialized
    model(torch.randn(4, 3))  # calibrates on first use
    assert model.quant.initialized


def test_loading_checkpoint_with_some_quantizer_keys_reports_missing():
    src = Wrapper()
    src(torch.randn(4, 3))
    sd = {k: v for k, v in src.state_dict().items() if k != 'quant.zero_point'}
    dst = Wrapper()
    with pytest.raises(RuntimeError, match='quant.zero_point'):
        dst.load_state_dict(sd, strict=True)
    result = Wrapper().load_state_dict(sd, strict=False)
    assert result.missing_keys == ['quant.zero_point']


def test_loading_partial_observer_state_reports_missing():
    src = Wrapper()
    src(torch.randn(4, 3))
    sd = {k: v for k, v in src.state_dict().items()
          if k != 'quant.observer.max_val'}
    result = Wrapper().load_state_dict(sd, strict=False)
    assert result.missing_keys == ['quant.observer.max_val']


def test_missing_non_lazy_keys_still_reported():
    sd = {'lin.weight': torch.zeros(2, 3)}  # no bias
    result = Wrapper().load_state_dict(sd, strict=False)
    assert result.missing_keys == ['lin.bias']
