import pytest
import torch
import torch.nn.functional as F
from torch_geometric.nn import Linear as PyGLinear

from pyg_qgnn import IntegerQuantizer, QuantLinear


def fq(x, quantizer):
    r"""Reference fake quantization s*(clamp(round(x/s+z),qmin,qmax)-z) with
    the quantizer's own (per-tensor) scale and zero point."""
    s = quantizer.scale.detach().reshape(())
    z = quantizer.zero_point.detach().reshape(())
    q = torch.clamp(torch.round(x.detach() / s + z), quantizer.qmin,
                    quantizer.qmax)
    return s * (q - z)


def fq_ste(x, quantizer):
    r""":func:`fq` with the straight-through gradient (identity)."""
    return x + (fq(x, quantizer) - x).detach()


@pytest.mark.parametrize('bias', [True, False])
def test_no_quantizers_equals_pyg_linear(bias):
    torch.manual_seed(0)
    ref = PyGLinear(6, 4, bias=bias)
    lin = QuantLinear(6, 4, bias=bias)
    lin.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(10, 6)
    assert torch.equal(lin(x), ref(x))
    assert list(lin.state_dict()) == list(ref.state_dict())


def test_no_quantizers_equals_torch_linear():
    torch.manual_seed(0)
    ref = torch.nn.Linear(5, 3)
    lin = QuantLinear(5, 3)
    lin.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(7, 2, 5)
    assert torch.equal(lin(x), ref(x))


def test_quantizers_keep_parameter_keys():
    ref = PyGLinear(6, 4)
    lin = QuantLinear(6, 4, input_quantizer=IntegerQuantizer(8),
                      weight_quantizer=IntegerQuantizer(4, symmetric=True),
                      output_quantizer=IntegerQuantizer(8))
    assert ([name for name, _ in lin.named_parameters()] ==
            [name for name, _ in ref.named_parameters()])
    assert set(ref.state_dict()) <= set(lin.state_dict())
    # The float layer's checkpoint loads strictly (quantizer state is lazy).
    lin.load_state_dict(ref.state_dict(), strict=True)
    assert torch.equal(lin.weight, ref.weight)


@pytest.mark.parametrize('float_cls', [torch.nn.Linear, PyGLinear])
@pytest.mark.parametrize('bias', [True, False])
def test_from_float(float_cls, bias):
    torch.manual_seed(0)
    ref = float_cls(6, 4, bias=bias)
    twin = QuantLinear.from_float(ref)
    assert isinstance(twin, QuantLinear)
    assert (twin.in_channels, twin.out_channels) == (6, 4)
    assert (twin.bias is None) == (not bias)
    x = torch.randn(9, 6)
    assert torch.equal(twin(x), ref(x))
    # A copy of the weights, not the same parameter.
    assert twin.weight is not ref.weight


def test_from_float_keeps_training_mode_and_quantizers():
    ref = PyGLinear(6, 4).eval()
    twin = QuantLinear.from_float(ref, weight=IntegerQuantizer(4))
    assert not twin.training
    assert isinstance(twin.weight_quantizer, IntegerQuantizer)
    assert twin.weight_quantizer.bits == 4
    assert twin.input_quantizer is None and twin.output_quantizer is None


@pytest.mark.parametrize('in_bits,w_bits', [(8, 8), (4, 3), (2, 2)])
def test_quantized_forward_matches_reference(in_bits, w_bits):
    torch.manual_seed(1)
    lin = QuantLinear(6, 4, input_quantizer=IntegerQuantizer(in_bits),
                      weight_quantizer=IntegerQuantizer(w_bits,
                                                        symmetric=True))
    x = torch.randn(12, 6)
    out = lin(x)
    expected = F.linear(fq(x, lin.input_quantizer),
                        fq(lin.weight, lin.weight_quantizer), lin.bias)
    assert out.shape == (12, 4)
    assert torch.equal(out, expected)
    # ... and it really is quantized.
    assert not torch.allclose(out, F.linear(x, lin.weight, lin.bias),
                              atol=1e-4)


def test_quantized_forward_matches_reference_in_eval():
    torch.manual_seed(2)
    lin = QuantLinear(6, 4, input_quantizer=IntegerQuantizer(8),
                      weight_quantizer=IntegerQuantizer(8),
                      output_quantizer=IntegerQuantizer(8))
    lin(torch.randn(20, 6))  # calibrate
    lin.eval()
    x = 3 * torch.randn(5, 6)  # partly out of the calibrated range: clamps
    out = lin(x)
    expected = fq(F.linear(fq(x, lin.input_quantizer),
                           fq(lin.weight, lin.weight_quantizer), lin.bias),
                  lin.output_quantizer)
    assert torch.equal(out, expected)


def test_gradient_reaches_weight_and_input():
    torch.manual_seed(3)
    lin = QuantLinear(6, 4, input_quantizer=IntegerQuantizer(4),
                      weight_quantizer=IntegerQuantizer(4, symmetric=True))
    x = torch.randn(8, 6, requires_grad=True)
    g = torch.randn(8, 4)
    (lin(x) * g).sum().backward()

    x_ref = x.detach().clone().requires_grad_()
    w_ref = lin.weight.detach().clone().requires_grad_()
    out = F.linear(fq_ste(x_ref, lin.input_quantizer),
                   fq_ste(w_ref, lin.weight_quantizer), lin.bias.detach())
    (out * g).sum().backward()

    assert x.grad is not None and lin.weight.grad is not None
    assert lin.bias.grad is not None
    assert x.grad.abs().sum() > 0 and lin.weight.grad.abs().sum() > 0
    assert torch.allclose(x.grad, x_ref.grad, atol=1e-6)
    assert torch.allclose(lin.weight.grad, w_ref.grad, atol=1e-6)


def test_repr_shows_bits():
    lin = QuantLinear(6, 4, input_quantizer=IntegerQuantizer(8),
                      weight_quantizer=IntegerQuantizer(4))
    assert repr(lin) == ('QuantLinear(6, 4, bias=True, input_bits=8, '
                         'weight_bits=4)')
    assert repr(QuantLinear(6, 4, bias=False)) == \
        'QuantLinear(6, 4, bias=False)'


def test_rejects_non_quantizer():
    with pytest.raises(TypeError, match='weight_quantizer'):
        QuantLinear(6, 4, weight_quantizer=torch.nn.Identity())
