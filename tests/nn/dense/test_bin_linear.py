"""Tests of BinLinear (the XNOR-Net++ block) against plain-torch references."""
import pytest
import torch
import torch.nn.functional as F
from torch_geometric.nn import Linear as PyGLinear

from pyg_qgnn import BinLinear, SignQuantizer, disable_fake_quant


def ref_sign(x):
    r"""sign (+1 at 0) with the clipped straight-through gradient."""
    inner = x.clamp(-1, 1)
    return inner + (torch.where(x >= 0, 1.0, -1.0) - inner).detach()


def ref_batch_norm(x, weight, bias, eps=1e-5):
    r"""Training-mode batch normalization from its definition."""
    mean = x.mean(0, keepdim=True)
    var = (x - mean).pow(2).mean(0, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def ref_prelu(x, slope):
    return torch.where(x > 0, x, slope * x)  # torch takes the slope at 0


def leaves(lin):
    r"""Detached copies of the block's parameters, as reference leaves."""
    return {name: p.detach().clone().requires_grad_()
            for name, p in lin.named_parameters()}


def randomize(lin, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in lin.named_parameters():
            if name != 'weight':  # BN affine, Γ, bias, PReLU slope
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5 + 1)
    return lin


def test_forward_and_gradients_match_the_xnor_net_block():
    torch.manual_seed(0)
    lin = randomize(BinLinear(6, 4))
    p = leaves(lin)
    x = torch.randn(12, 6, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    out = lin(x)
    ref = ref_prelu(
        F.linear(ref_sign(ref_batch_norm(x_ref, p['norm.weight'],
                                         p['norm.bias'])),
                 ref_sign(p['weight'])) * p['rescale.alpha'] + p['bias'],
        p['activation.weight'])
    assert torch.allclose(out, ref, atol=1e-5)
    upstream = torch.randn(12, 4)
    out.backward(upstream)
    ref.backward(upstream)
    assert torch.allclose(x.grad, x_ref.grad, atol=1e-5)
    for name, param in lin.named_parameters():
        assert torch.allclose(param.grad, p[name].grad, atol=1e-5), name


def test_binary_products_are_integers_times_gamma():
    torch.manual_seed(0)
    lin = BinLinear(7, 3, bias=False, batch_norm=False, activation=None)
    with torch.no_grad():
        lin.rescale.alpha.copy_(torch.tensor([0.5, 2.0, -1.0]))
    out = lin(torch.randn(20, 7)) / lin.rescale.alpha
    assert torch.equal(out, out.round())
    assert bool((out.abs() <= 7).all()) and bool((out.remainder(2) == 1).all())


def test_eval_uses_running_statistics():
    torch.manual_seed(0)
    lin = randomize(BinLinear(5, 3))
    lin(torch.randn(16, 5) * 3 + 1)  # updates the running statistics
    lin.eval()
    x = torch.randn(4, 5)
    norm = lin.norm
    x_n = (x - norm.running_mean) / torch.sqrt(norm.running_var + norm.eps)
    x_n = x_n * norm.weight + norm.bias
    ref = ref_prelu(F.linear(torch.where(x_n >= 0, 1.0, -1.0),
                             torch.where(lin.weight >= 0, 1.0, -1.0))
                    * lin.rescale.alpha + lin.bias, lin.activation.weight)
    assert torch.allclose(lin(x), ref, atol=1e-5)


@pytest.mark.parametrize('bias', [True, False])
def test_binarization_off_without_norm_and_activation_is_pyg_linear(bias):
    torch.manual_seed(0)
    ref = PyGLinear(6, 4, bias=bias)
    lin = BinLinear(6, 4, bias=bias, batch_norm=False, activation=None)
    missing, unexpected = lin.load_state_dict(ref.state_dict(), strict=False)
    assert missing == ['rescale.alpha'] and unexpected == []
    lin.apply(disable_fake_quant)
    x = torch.randn(9, 6)
    assert torch.allclose(lin(x), ref(x), atol=1e-6)
    assert set(ref.state_dict()) < set(lin.state_dict())


def test_binarization_off_is_the_real_block():
    torch.manual_seed(0)
    lin = randomize(BinLinear(6, 4)).eval()
    lin.apply(disable_fake_quant)
    x = torch.randn(5, 6)
    ref = ref_prelu(F.linear(lin.norm(x), lin.weight) * lin.rescale.alpha
                    + lin.bias, lin.activation.weight)
    assert torch.allclose(lin(x), ref, atol=1e-6)


def test_real_weights_with_binary_inputs_as_a_last_layer():
    torch.manual_seed(0)
    lin = BinLinear(6, 3, activation=None, weight_quantizer=None).eval()
    assert lin.weight_quantizer is None
    x = torch.randn(5, 6)
    ref = F.linear(torch.where(lin.norm(x) >= 0, 1.0, -1.0), lin.weight,
                   lin.bias)
    assert torch.allclose(lin(x), ref, atol=1e-6)


def test_rank_one_rescaling_over_dense_modes():
    torch.manual_seed(0)
    lin = BinLinear(4, 3, bias=False, batch_norm=False, activation=None,
                    rescale_modes=(5, 2))
    with torch.no_grad():
        for param in lin.rescale.parameters():
            param.normal_()
    x = torch.randn(2, 5, 2, 4)
    binary = F.linear(torch.where(x >= 0, 1.0, -1.0),
                      torch.where(lin.weight >= 0, 1.0, -1.0))
    gamma = torch.einsum('h,w,o->hwo', lin.rescale.factors[0],
                         lin.rescale.factors[1], lin.rescale.alpha)
    assert torch.allclose(lin(x), binary * gamma, atol=1e-5)


def test_quantizer_arguments_and_repr():
    custom = SignQuantizer(balance='median')
    lin = BinLinear(6, 4, input_quantizer=custom)
    assert lin.input_quantizer is custom
    assert isinstance(lin.weight_quantizer, SignQuantizer)
    assert repr(lin) == ("BinLinear(6, 4, bias=True, input_bits=1, "
                         "weight_bits=1, batch_norm=True, "
                         "activation='prelu')")
    assert 'weight_bits' not in repr(BinLinear(6, 4, weight_quantizer=None))


@pytest.mark.parametrize('kwargs,error,match', [
    (dict(activation='tanh'), ValueError, "'activation'"),
    (dict(input_quantizer='round'), ValueError, "'input_quantizer'"),
    (dict(weight_quantizer=torch.nn.Identity()), TypeError,
     "'weight_quantizer'"),
    (dict(in_channels=-1), ValueError, "'in_channels'"),
])
def test_bad_arguments_name_the_argument(kwargs, error, match):
    args = dict(in_channels=6, out_channels=4)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        BinLinear(**args)


def test_nan_input_is_an_error_naming_x():
    lin = BinLinear(3, 2, batch_norm=False)
    with pytest.raises(ValueError, match="'x' contains NaN"):
        lin(torch.tensor([[0.0, float('nan'), 1.0]]))
