"""Tests of pyg_qgnn.quantizers.binary against plain-torch references."""
import copy

import pytest
import torch

from pyg_qgnn import disable_fake_quant
from pyg_qgnn.nn import BinLinear
from pyg_qgnn.quantizers import (
    LearnedRescale,
    SignQuantizer,
    center_and_clip_,
    clip_latent_weights_,
    pack_signs,
    register_latent_weight_clipping,
    set_binarization_stage,
    unpack_bits,
    unpack_signs,
)


def ref_sign(x):
    r"""sign(x) (+1 at 0) with the clipped straight-through gradient
    1_{|x| <= 1}, written with autograd primitives only."""
    inner = x.clamp(-1, 1)
    return inner + (torch.where(x >= 0, 1.0, -1.0) - inner).detach()


# SignQuantizer ###############################################################


def test_forward_is_sign_with_clipped_straight_through_gradient():
    x = torch.tensor([-2.0, -1.0, -0.3, -0.0, 0.0, 0.4, 1.0, 1.5],
                     requires_grad=True)
    upstream = torch.arange(1.0, 9.0)
    out = SignQuantizer()(x)
    out.backward(upstream)
    assert torch.equal(out, torch.tensor([-1.0, -1, -1, 1, 1, 1, 1, 1]))
    assert torch.equal(x.grad, upstream * torch.tensor([0.0, 1, 1, 1, 1, 1,
                                                        1, 0]))


@pytest.mark.parametrize('method', ['mean', 'median'])
def test_balance_centres_each_channel_before_the_sign(method):
    torch.manual_seed(0)
    x = (torch.randn(9, 4) + 3).requires_grad_()
    out = SignQuantizer(balance=method)(x)
    x_ref = x.detach().clone().requires_grad_()
    centre = (x_ref.mean(0, keepdim=True) if method == 'mean' else
              x_ref.median(0, keepdim=True).values)
    ref = ref_sign(x_ref - centre)
    assert torch.equal(out, ref)
    upstream = torch.randn(9, 4)
    out.backward(upstream)
    ref.backward(upstream)
    assert torch.allclose(x.grad, x_ref.grad, atol=1e-6)
    # All inputs were positive; centring splits them across the sign.
    assert bool((out == -1).any()) and bool((out == 1).any())
    if method == 'median':  # 9 rows: 4 below the median, the median at 0
        assert torch.equal((out == 1).sum(0), torch.full((4, ), 5))


def test_relaxed_tanh_and_identity_relaxation():
    x = torch.linspace(-2, 2, 9, requires_grad=True)
    quantizer = SignQuantizer()
    quantizer.relaxed = True
    out = quantizer(x)
    assert torch.allclose(out, torch.tanh(x.detach()))
    out.sum().backward()
    assert torch.allclose(x.grad, 1 - torch.tanh(x.detach())**2)
    identity = SignQuantizer(relaxation=None)
    identity.relaxed = True
    assert torch.equal(identity(x), x)
    assert not quantizer.binarizing and not identity.binarizing


def test_disabled_is_identity_and_stateless():
    x = torch.randn(5, 3)
    quantizer = SignQuantizer(balance='mean')
    quantizer.apply(disable_fake_quant)
    assert quantizer(x) is x
    assert len(quantizer.state_dict()) == 0
    assert quantizer.bits == 1
    assert repr(quantizer) == "SignQuantizer(bits=1, balance='mean')"


def test_quantize_dequantize_and_pack_layout():
    x = torch.tensor([[0.5, -0.1, 0.0, -3.0, 2.0, 1.0, -1.0, 0.2, -0.7],
                      [-0.5, 0.1, -1e-9, 3.0, -2.0, -1.0, 1.0, -0.2, 0.7]])
    quantizer = SignQuantizer()
    codes = quantizer.quantize(x)
    assert codes.dtype == torch.int8
    assert torch.equal(codes, torch.where(x >= 0, 1, -1).to(torch.int8))
    assert torch.equal(quantizer.dequantize(codes), quantizer(x))
    packed = quantizer.pack(x)
    assert packed.dtype == torch.uint8 and packed.shape == (2, 2)
    # bit 1 for +1, the first value in the lowest bit: 1,0,1,0,1,1,0,1 | 0
    assert packed[0].tolist() == [0b10110101, 0]
    assert packed[1].tolist() == [0b01001010, 1]
    assert torch.equal(unpack_signs(packed, 9), codes)
    assert torch.equal(pack_signs(codes), packed)
    assert torch.equal(pack_signs(codes.float()), packed)


def test_pack_signs_rejects_values_other_than_plus_minus_one():
    for bad in ([1.0, 0.0], [1.0, 0.5], [1.0, float('nan')], [2, -1]):
        with pytest.raises(ValueError, match="'codes' must hold only -1 and"):
            pack_signs(torch.tensor(bad))
    with pytest.raises(TypeError, match="'codes'"):
        pack_signs(torch.tensor([True, False]))


@pytest.mark.parametrize('dim', [1, 7, 8, 13, 64])
def test_xor_of_packed_codes_is_negated_product(dim):
    torch.manual_seed(dim)
    quantizer = SignQuantizer()
    x_i = quantizer(torch.randn(6, dim))
    x_j = quantizer(torch.randn(6, dim))
    edge = -x_i * x_j
    assert torch.equal(quantizer.pack(edge),
                       quantizer.pack(x_i) ^ quantizer.pack(x_j))
    # and the number of set bits is the Hamming distance
    ones = unpack_bits(quantizer.pack(edge), 1, dim).sum(-1)
    assert torch.equal(ones.long(), (x_i != x_j).sum(-1))


def test_dequantize_rejects_codes_other_than_plus_minus_one():
    with pytest.raises(ValueError, match="'codes'.*-1 and \\+1"):
        SignQuantizer().dequantize(torch.tensor([1, 0, -1], dtype=torch.int8))


@pytest.mark.parametrize('bad', [float('nan'), float('inf')])
def test_non_finite_input_is_an_error_naming_x(bad):
    x = torch.tensor([0.5, bad])
    with pytest.raises(ValueError, match="'x' contains NaN or Inf"):
        SignQuantizer()(x)
    with pytest.raises(ValueError, match="'x' contains NaN or Inf"):
        SignQuantizer().quantize(x)


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="'balance'"):
        SignQuantizer(balance='max')
    with pytest.raises(ValueError, match="'relaxation'"):
        SignQuantizer(relaxation='sigmoid')
    with pytest.raises(TypeError, match='dtype'):
        SignQuantizer()(torch.ones(3, dtype=torch.long))


# LearnedRescale ##############################################################


def test_channel_wise_rescaling_eq10():
    torch.manual_seed(0)
    rescale = LearnedRescale(4)
    torch.nn.init.normal_(rescale.alpha)
    x = torch.randn(5, 4, requires_grad=True)
    out = rescale(x)
    assert torch.equal(out, x * rescale.alpha)
    assert torch.equal(rescale.gamma, rescale.alpha)
    out.sum().backward()
    assert torch.allclose(rescale.alpha.grad, x.detach().sum(0))


def test_rank_one_per_mode_rescaling_eq11_values_and_gradients():
    torch.manual_seed(0)
    rescale = LearnedRescale(4, modes=(3, 5))
    for param in rescale.parameters():
        torch.nn.init.normal_(param)
    alpha, beta, gamma = (p.detach().clone().requires_grad_()
                          for p in (rescale.alpha, *rescale.factors))
    x = torch.randn(2, 3, 5, 4)
    upstream = torch.randn(2, 3, 5, 4)
    ref = x * torch.einsum('h,w,o->hwo', beta, gamma, alpha)
    out = rescale(x)
    assert torch.allclose(out, ref, atol=1e-6)
    assert torch.allclose(rescale.gamma,
                          torch.einsum('h,w,o->hwo', beta, gamma, alpha))
    out.backward(upstream)
    ref.backward(upstream)
    for got, want in zip((rescale.alpha, *rescale.factors),
                         (alpha, beta, gamma)):
        assert torch.allclose(got.grad, want.grad, atol=1e-5)


def test_rescale_checks_shapes():
    with pytest.raises(ValueError, match="'x' must end with dimensions"):
        LearnedRescale(4, modes=(3, ))(torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match="'channels' and 'modes'"):
        LearnedRescale(0)
    assert repr(LearnedRescale(4, (3, 5))) == 'LearnedRescale(4, modes=(3, 5))'


# Latent weights ##############################################################


def test_center_and_clip_matches_reference():
    torch.manual_seed(0)
    weight = torch.randn(4, 6) * 2 + 0.5
    ref = (weight - weight.mean(1, keepdim=True)).clamp(-1, 1)
    assert torch.allclose(center_and_clip_(weight), ref)


def test_clip_latent_weights_touches_only_binarized_weights():
    torch.manual_seed(0)
    binary = BinLinear(6, 4)
    real = BinLinear(6, 4, weight_quantizer=None)
    off = BinLinear(6, 4)
    off.apply(disable_fake_quant)
    model = torch.nn.ModuleList([binary, real, off])
    for lin in model:
        torch.nn.init.normal_(lin.weight, mean=1.0, std=3.0)
    before = [lin.weight.detach().clone() for lin in model]
    clip_latent_weights_(model)
    assert torch.allclose(binary.weight,
                          (before[0] - before[0].mean(1, keepdim=True))
                          .clamp(-1, 1))
    assert torch.equal(real.weight, before[1])
    assert torch.equal(off.weight, before[2])


def test_optimizer_hook_clips_after_every_step_and_can_be_removed():
    torch.manual_seed(0)
    lin = BinLinear(6, 4, batch_norm=False)
    plain = copy.deepcopy(lin)
    optimizer = torch.optim.SGD(lin.parameters(), lr=100.0)
    plain_optimizer = torch.optim.SGD(plain.parameters(), lr=100.0)
    handle = register_latent_weight_clipping(optimizer, lin)
    x = torch.randn(8, 6)
    for model, opt in ((lin, optimizer), (plain, plain_optimizer)):
        model(x).pow(2).sum().backward()
        opt.step()
    assert float(plain.weight.detach().abs().max()) > 1.0  # left [-1, 1]
    assert torch.allclose(lin.weight, center_and_clip_(plain.weight.detach()))
    handle.remove()
    with torch.no_grad():
        lin.weight.fill_(5.0)
    optimizer.zero_grad()
    optimizer.step()  # no hook any more: the weight stays out of range
    assert float(lin.weight.detach().max()) == 5.0
    with pytest.raises(TypeError, match="'optimizer'"):
        register_latent_weight_clipping(lin, lin)


# Stages ######################################################################


@pytest.mark.parametrize('stage,activation,weight', [
    (0, (False, False), (False, False)),
    (1, (True, True), (False, False)),
    (2, (True, False), (False, False)),
    (3, (True, False), (True, False)),
])
def test_set_binarization_stage(stage, activation, weight):
    lin = BinLinear(6, 4)
    assert set_binarization_stage(lin, stage) is lin
    state = lambda q: (q.fake_quant_enabled, q.relaxed)  # noqa: E731
    assert state(lin.input_quantizer) == activation
    assert state(lin.weight_quantizer) == weight
    x = torch.randn(5, 6)
    lin.eval()
    x_n = lin.normalize(x)
    w = lin.weight
    x_q = {0: x_n, 1: torch.tanh(x_n), 2: torch.sign(x_n),
           3: torch.sign(x_n)}[stage]
    w_q = torch.sign(w) if stage == 3 else w
    ref = lin.activation(torch.nn.functional.linear(x_q, w_q) + lin.bias)
    assert torch.allclose(lin(x), ref, atol=1e-5)


def test_set_binarization_stage_rejects_unknown_stage():
    with pytest.raises(ValueError, match="'stage' must be one of"):
        set_binarization_stage(BinLinear(2, 2), 4)
