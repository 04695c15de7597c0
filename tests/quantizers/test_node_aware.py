import pytest
import torch

from pyg_qgnn.quantizers import NodeAwareQuantizer, disable_fake_quant
from pyg_qgnn.quantizers.node_aware import (
    LEVEL_DTYPE,
    assign_codes,
    boundaries,
    initial_levels,
    round_to_fp8,
)

# Two nodes, d = 5; ranges [0, 4] and [-1, 1]: gaps 1 and 0.5 at 2 bits.
TABLE = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0],
                      [-1.0, -1.0, 1.0, 0.5, 0.2]])


def test_initialization_equals_hand_computed_example():
    codes, levels = initial_levels(TABLE, bits=2)
    # Eq. 2: floor((e - min) / gap), the maximum in the last interval.
    assert codes.tolist() == [[0, 1, 2, 3, 3], [0, 0, 3, 3, 2]]
    # Eq. 5: midpoints min + (2k + 1) / 2 * gap.
    assert levels.tolist() == [[0.5, 1.5, 2.5, 3.5],
                               [-0.75, -0.25, 0.25, 0.75]]
    assert codes.dtype == torch.uint8


def test_forward_maps_codes_to_levels():
    quantizer = NodeAwareQuantizer(bits=2)
    out = quantizer(TABLE)
    assert out.tolist() == [[0.5, 1.5, 2.5, 3.5, 3.5],
                            [-0.75, -0.75, 0.75, 0.75, 0.25]]
    assert torch.equal(quantizer.extended(TABLE), out)  # E'_quant alone
    appending = NodeAwareQuantizer(bits=2, append_levels=True)
    extended = appending.extended(TABLE)  # Eq. 11: [E'_quant, S]
    assert extended.shape == (2, 5 + 4)
    assert torch.equal(extended[:, :5], out)
    assert torch.equal(extended[:, 5:], appending.levels.data)
    assert NodeAwareQuantizer(2, dynamic_step=False).extended(TABLE).shape \
        == (2, 5)


def test_boundaries_are_midpoints_of_sorted_levels():
    levels = torch.tensor([[3.0, 0.5, 2.0, 1.0]])
    cuts, order = boundaries(levels)
    assert cuts.tolist() == [[0.75, 1.5, 2.5]]
    assert order.tolist() == [[1, 3, 2, 0]]
    x = torch.tensor([[0.7, 0.75, 1.6, 10.0, -5.0]])
    codes = assign_codes(x, levels)
    # The nearest level wins; a boundary value goes up (Eq. 2).
    assert codes.tolist() == [[1, 3, 2, 0, 1]]
    assert levels.gather(1, codes.long()).tolist() == [[0.5, 1.0, 2.0, 3.0,
                                                        0.5]]


def test_update_codes_follows_the_learned_levels():
    quantizer = NodeAwareQuantizer(bits=2)
    quantizer(TABLE)
    with torch.no_grad():  # an optimizer step that reorders node 0's levels
        quantizer.levels[0] = torch.tensor([3.0, 0.5, 2.0, 1.0])
    quantizer.update_codes_(TABLE)
    assert quantizer.codes[0].tolist() == [1, 3, 2, 0, 0]


@pytest.mark.parametrize('append_levels', [False, True])
def test_gradients_equal_a_plain_torch_reference(append_levels):
    x = TABLE.clone().requires_grad_()
    quantizer = NodeAwareQuantizer(bits=2, append_levels=append_levels)
    quantizer.initialize(x)
    weight = torch.randn(2, 9 if append_levels else 5)
    (quantizer.extended(x) * weight).sum().backward()

    codes, levels = initial_levels(TABLE, 2)
    ref_levels = levels.to(LEVEL_DTYPE).float().requires_grad_()
    ref_x = TABLE.clone().requires_grad_()
    straight = ref_x - ref_x.detach()  # zero, with the identity gradient
    ref = ref_levels.gather(1, codes.long()) + straight
    if append_levels:
        ref = torch.cat([ref, ref_levels], dim=1)
    (ref * weight).sum().backward()
    assert torch.equal(quantizer.extended(x).detach(), ref.detach())
    # The levels learn through the entries that read them (and their own
    # channels when appended); the float table straight through.
    assert torch.allclose(quantizer.levels.grad, ref_levels.grad)
    assert quantizer.levels.grad.abs().sum() > 0
    assert torch.allclose(x.grad, ref_x.grad)


def test_levels_are_stored_in_fp8():
    levels = torch.tensor([[0.1, 0.3, 500.0, -1e-4]], requires_grad=True)
    stored = round_to_fp8(levels)
    expected = levels.detach().clamp(-448, 448).to(torch.float8_e4m3fn)
    assert torch.equal(stored.detach(), expected.float())
    stored.sum().backward()
    assert levels.grad.tolist() == [[1.0, 1.0, 1.0, 1.0]]


def test_error_shrinks_with_bits():
    torch.manual_seed(0)
    table = torch.randn(50, 64) * 0.1
    errors = []
    for bits in (2, 4, 8):
        out = NodeAwareQuantizer(bits)(table)
        errors.append(float((out.detach() - table).norm() / table.norm()))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.03  # 8 bits: FP8 levels dominate the error


def test_switched_off_is_the_identity():
    quantizer = NodeAwareQuantizer()
    quantizer.apply(disable_fake_quant)
    assert quantizer(TABLE) is TABLE
    assert quantizer.extended(TABLE) is TABLE


def test_state_dict_round_trip():
    quantizer = NodeAwareQuantizer(bits=3)
    quantizer(torch.randn(6, 4))
    fresh = NodeAwareQuantizer(bits=3)
    fresh.load_state_dict(quantizer.state_dict())
    assert torch.equal(fresh.codes, quantizer.codes)
    assert torch.equal(fresh.levels, quantizer.levels)
    assert 'bits=3' in repr(fresh) and 'nodes=6' in repr(fresh)


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="'bits'"):
        NodeAwareQuantizer(bits=9)
    for weight in (0, 1.5, True, '0.5'):
        with pytest.raises(ValueError, match="'relation_weight' must be"):
            NodeAwareQuantizer(relation_weight=weight)
    with pytest.raises(ValueError, match="'append_levels=True' needs"):
        NodeAwareQuantizer(dynamic_step=False, append_levels=True)
    quantizer = NodeAwareQuantizer()
    with pytest.raises(TypeError, match="'x' must be a floating-point"):
        quantizer(torch.ones(2, 3, dtype=torch.long))
    quantizer(TABLE)
    with pytest.raises(ValueError, match='one row per node'):
        quantizer(torch.randn(3, 5))
    with pytest.raises(ValueError, match='NaN or Inf'):
        quantizer.quantize(torch.full((2, 5), float('nan')))
    with pytest.raises(RuntimeError, match='no levels yet'):
        NodeAwareQuantizer().quantize(TABLE)
