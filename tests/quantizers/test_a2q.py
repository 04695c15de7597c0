"""Tests of A²Q: the per-node quantizer (pyg_qgnn.quantizers.a2q) and the A2Q
scheme (pyg_qgnn.quantize)."""
import math

import pytest
import torch
from torch_geometric.nn import GCNConv
from torch_geometric.nn.models import GCN

import pyg_qgnn
from pyg_qgnn import A2Q, IntegerQuantizer, quantize_model
from pyg_qgnn.deploy import load, save
from pyg_qgnn.quantizers import A2QQuantizer, a2q_fake_quantize
from pyg_qgnn.quantizers.a2q import average_bits, memory_penalty, round_bits


def graph(num_nodes=30, num_edges=120, channels=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(num_nodes, channels, generator=gen)
    edge_index = torch.randint(num_nodes, (2, num_edges), generator=gen)
    y = torch.randint(4, (num_nodes, ), generator=gen)
    return x, edge_index, y


def reference(x, step, bits, signed, clipped):
    r"""Plain torch: x̂ = α clamp(round(x/α), qmin(b), qmax(b)) with the bounds
    differentiable in b, and the local error E_i = mean_f |x̂ - x|. Returns
    x̂ for the task gradient (to x) and E for the step/bit-width gradient."""
    if signed:
        qmin, qmax = -torch.exp2(bits - 1), torch.exp2(bits - 1) - 1
    else:
        qmin, qmax = torch.zeros_like(bits), torch.exp2(bits) - 1
    v = x.detach() / step
    clamped = torch.clamp(v, qmin, qmax)
    xq = step * (clamped + (torch.round(clamped) - clamped).detach())
    error = (xq - x.detach()).abs().mean(dim=1).sum()
    # Task path: x̂ value, (clipped) straight-through gradient to x.
    inside = ((v >= qmin) & (v <= qmax)).to(x.dtype) if clipped else 1.0
    task = xq.detach() + (x - x.detach()) * inside
    return task, error


@pytest.mark.parametrize('signed', [True, False])
@pytest.mark.parametrize('grad', ['ste', 'clipped'])
def test_fake_quantize_matches_reference_values_and_gradients(signed, grad):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(12, 5, generator=gen, dtype=torch.float64) * 2
    if not signed:
        x = x.abs()
    step = (torch.rand(12, 1, generator=gen, dtype=torch.float64) * 0.5 +
            0.05)
    bits = torch.randint(1, 9, (12, 1), generator=gen).to(torch.float64)
    upstream = torch.randn(12, 5, generator=gen, dtype=torch.float64)

    leaves = [t.clone().requires_grad_() for t in (x, step, bits)]
    out = a2q_fake_quantize(*leaves, signed=signed, grad=grad)
    out.backward(upstream)

    ref = [t.clone().requires_grad_() for t in (x, step, bits)]
    task, error = reference(*ref, signed=signed, clipped=grad == 'clipped')
    assert torch.allclose(out, task)
    task.backward(upstream)
    error.backward()
    for mine, theirs in zip(leaves, ref):
        assert torch.allclose(mine.grad, theirs.grad), mine.shape


def test_step_and_bit_gradients_are_local():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(6, 4, generator=gen) * 3
    step = torch.full((6, 1), 0.1, requires_grad=True)
    bits = torch.full((6, 1), 3.0, requires_grad=True)
    grads = []
    for scale in (1.0, -5.0):
        step.grad = bits.grad = None
        a2q_fake_quantize(x, step, bits).backward(torch.full((6, 4), scale))
        grads.append((step.grad.clone(), bits.grad.clone()))
    assert torch.equal(grads[0][0], grads[1][0])
    assert torch.equal(grads[0][1], grads[1][1])
    # Saturated values pull the bit width up (negative gradient).
    assert bool((grads[0][1] < 0).all())


def test_round_bits_rounds_clamps_and_passes_gradient():
    bits = torch.tensor([0.2, 1.4, 3.5, 4.6, 11.0], requires_grad=True)
    out = round_bits(bits)
    assert out.tolist() == [1.0, 1.0, 4.0, 5.0, 8.0]
    out.sum().backward()
    assert bits.grad.tolist() == [1.0] * 5


# A2QQuantizer ################################################################


def test_first_input_creates_one_pair_per_node():
    x, _, _ = graph()
    quantizer = A2QQuantizer(init_bits=4)
    assert quantizer.bits == 4 and not quantizer.initialized
    quantizer(x)
    assert quantizer.log_step.shape == quantizer.bit_width.shape == (30, )
    assert bool((quantizer.bit_width == 4).all())
    assert bool(quantizer.is_signed) and int(quantizer.row_size) == 8
    assert torch.allclose(quantizer.step, x.abs().amax(dim=1) / 8)
    unsigned = A2QQuantizer(init_bits=4)
    unsigned(x.relu())
    assert not bool(unsigned.is_signed)
    assert torch.allclose(unsigned.step, x.relu().amax(dim=1) / 15)


def test_row_i_uses_pair_i():
    x, _, _ = graph()
    quantizer = A2QQuantizer(init_bits=3)
    before = quantizer(x).detach()
    with torch.no_grad():
        quantizer.log_step[4] += math.log(3)
        quantizer.bit_width[9] = 1.0  # a narrower range clips more
    after = quantizer(x).detach()
    changed = (after != before).any(dim=1).nonzero().view(-1).tolist()
    assert changed == [4, 9]


def test_training_projects_bits_and_the_step_stays_positive():
    x, _, _ = graph()
    quantizer = A2QQuantizer()
    quantizer(x)
    with torch.no_grad():
        quantizer.bit_width[:2] = torch.tensor([11.0, -3.0])
        quantizer.log_step[2] = -200.0  # any log-step is a positive step
    quantizer.eval()(x)
    assert quantizer.bit_width[0] == 11.0  # evaluation leaves them alone
    quantizer.train()(x)
    assert quantizer.bit_width[:2].tolist() == [8.0, 1.0]
    assert quantizer.bits == '1..8'
    assert bool(torch.isfinite(quantizer(x)).all())


def test_log_step_moves_each_step_by_the_same_relative_amount():
    # One Adam step changes log-steps by ~lr each, so a hub's step and a
    # leaf's step, orders of magnitude apart, change by the same factor.
    x = torch.cat([torch.randn(1, 8) * 1e3, torch.randn(1, 8) * 1e-3])
    quantizer = A2QQuantizer(init_bits=3)
    quantizer(x)
    before = quantizer.step.detach().clone()
    optimizer = torch.optim.Adam([quantizer.log_step], lr=0.1)
    quantizer(x).sum().backward()
    optimizer.step()
    ratio = (quantizer.step.detach() / before).log().abs()
    assert torch.allclose(ratio, torch.full((2, ), 0.1), rtol=1e-3)


def test_quantize_dequantize_match_forward():
    x, _, _ = graph()
    quantizer = A2QQuantizer(init_bits=3)
    quantizer(x)
    with torch.no_grad():
        quantizer.bit_width.copy_(torch.randint(1, 9, (30, )).float())
    quantizer.eval()
    codes = quantizer.quantize(x)
    assert codes.dtype == torch.int8
    assert torch.equal(quantizer.dequantize(codes), quantizer(x))
    other = torch.randn(7, 8)
    index = quantizer.assign(other)
    assert torch.equal(quantizer.dequantize(quantizer.quantize(other), index),
                       quantizer(other))
    with pytest.raises(ValueError, match="'index'"):
        quantizer.dequantize(quantizer.quantize(other))


def test_unseen_graph_of_another_size_uses_nearest_pair():
    x, _, _ = graph()
    quantizer = A2QQuantizer(init_bits=4)
    quantizer(x)
    with torch.no_grad():
        quantizer.bit_width.copy_(torch.randint(2, 9, (30, )).float())
    quantizer.eval()
    new = torch.randn(47, 8, generator=torch.Generator().manual_seed(3)) * 2
    index = quantizer.assign(new)
    reach = quantizer.step * torch.exp2(quantizer.bit_width - 1)
    brute = (new.abs().amax(dim=1, keepdim=True) - reach).abs().argmin(dim=1)
    assert torch.equal(reach[index], reach[brute])  # ties may pick either
    out = quantizer(new)
    expected = a2q_fake_quantize(new, quantizer.step[index].view(-1, 1),
                                 quantizer.bit_width[index].view(-1, 1))
    assert torch.equal(out, expected)


def test_group_pool_serves_graphs_of_any_size_and_is_equivariant():
    x, _, _ = graph()
    quantizer = A2QQuantizer(init_bits=4, num_groups=5)
    quantizer(x)
    assert quantizer.log_step.shape == (5, )
    for n in (3, 30, 64):
        rows = torch.randn(n, 8, generator=torch.Generator().manual_seed(n))
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(1))
        assert torch.equal(quantizer(rows)[perm], quantizer(rows[perm]))


def test_per_node_table_is_equivariant_with_its_nodes():
    x, _, _ = graph()
    quantizer = A2QQuantizer(init_bits=3)
    quantizer(x)
    with torch.no_grad():
        quantizer.bit_width.copy_(torch.randint(1, 9, (30, )).float())
    out = quantizer(x)
    perm = torch.randperm(30, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        quantizer.log_step.copy_(quantizer.log_step[perm])
        quantizer.bit_width.copy_(quantizer.bit_width[perm])
    assert torch.equal(out[perm], quantizer(x[perm]))


def test_average_bits_weighs_nodes_by_feature_count():
    small, large = A2QQuantizer(), A2QQuantizer()
    small(torch.randn(10, 2))
    large(torch.randn(4, 6))
    with torch.no_grad():
        small.bit_width.fill_(2.0)
        large.bit_width.fill_(8.0)
    expected = (10 * 2 * 2 + 4 * 6 * 8) / (10 * 2 + 4 * 6)
    assert math.isclose(float(average_bits([small, large]).detach()), expected,
                        rel_tol=1e-6)
    penalty = memory_penalty([small, large], 3.0, weight=0.5)
    assert math.isclose(float(penalty.detach()),
                        0.5 * 14 * (expected - 3.0) ** 2,
                        rel_tol=1e-6)
    with pytest.raises(RuntimeError, match='call the model'):
        average_bits([A2QQuantizer()])


@pytest.mark.parametrize('kwargs,exc,name', [
    (dict(init_bits=0), ValueError, 'bits'),
    (dict(init_bits=9), ValueError, 'bits'),
    (dict(num_groups=0), ValueError, 'num_groups'),
    (dict(grad='lsq'), ValueError, 'grad'),
])
def test_quantizer_rejects_bad_arguments(kwargs, exc, name):
    with pytest.raises(exc, match=f"'{name}'"):
        A2QQuantizer(**kwargs)


# The A2Q scheme ##############################################################


def test_scheme_builds_per_node_features_and_per_channel_weights():
    conv = quantize_model(GCNConv(8, 4), A2Q(init_bits=3, weight_bits=6))
    assert isinstance(conv.input_quantizer, A2QQuantizer)
    assert conv.input_quantizer.init_bits == 3
    assert conv.aggregate_quantizer is None
    weight = conv.weight_quantizer
    assert type(weight) is IntegerQuantizer and weight.grad == 'clipped'
    assert weight.granularity == 'channel' and weight.symmetric
    assert (weight.bits, weight.granularity, weight.channel_axis) == \
        (6, 'channel', 0)
    x, edge_index, _ = graph()
    conv(x, edge_index)
    assert weight.scale.shape == (4, )  # one step per output channel
    assert 'input_bits=3' in repr(conv)


def test_scheme_with_quantizers_off_equals_gcn():
    x, edge_index, _ = graph()
    torch.manual_seed(0)
    model = GCN(8, 16, 2, 4)
    qmodel = quantize_model(model, A2Q(points=('input', 'weight',
                                                'aggregate', 'output')))
    assert not torch.allclose(qmodel(x, edge_index), model(x, edge_index))
    qmodel.apply(pyg_qgnn.disable_fake_quant)
    assert torch.equal(qmodel(x, edge_index), model(x, edge_index))


def train(model, scheme, steps, graph_args):
    x, edge_index, y = graph_args
    bits = [p for n, p in model.named_parameters() if n.endswith('bit_width')]
    rest = [p for n, p in model.named_parameters()
            if not n.endswith('bit_width')]
    optimizer = torch.optim.Adam([dict(params=bits, lr=0.1),
                                  dict(params=rest, lr=0.01)])
    history = []
    for _ in range(steps):
        optimizer.zero_grad()
        out = model(x, edge_index)
        loss = torch.nn.functional.cross_entropy(out, y)
        loss = loss + scheme.memory_penalty(model)
        history.append(float(scheme.average_bits(model).detach()))
        loss.backward()
        optimizer.step()
    return history


@pytest.mark.parametrize('target', [2.0, 6.5])
def test_average_bits_move_towards_the_target(target):
    torch.manual_seed(0)
    scheme = A2Q(init_bits=4, target_avg_bits=target, memory_weight=1.0)
    model = quantize_model(GCN(8, 16, 2, 4), scheme)
    history = train(model, scheme, 25, graph())
    assert history[0] == 4.0
    assert abs(history[-1] - target) < 0.5 * abs(4.0 - target)


def test_without_target_the_penalty_is_zero():
    scheme = A2Q()
    model = quantize_model(GCN(8, 16, 2, 4), scheme)
    x, edge_index, _ = graph()
    model(x, edge_index)
    assert float(scheme.memory_penalty(model)) == 0.0
    with pytest.raises(ValueError, match="'model'"):
        scheme.memory_penalty(GCN(8, 16, 2, 4))


def test_trained_model_runs_on_a_graph_of_another_size():
    torch.manual_seed(0)
    scheme = A2Q(target_avg_bits=3.0)
    model = quantize_model(GCN(8, 16, 2, 4), scheme)
    train(model, scheme, 3, graph())
    model.eval()
    x, edge_index, _ = graph(num_nodes=47, num_edges=200, seed=5)
    out = model(x, edge_index)
    assert out.shape == (47, 4) and bool(torch.isfinite(out).all())
    quantizer = model.convs[0].input_quantizer
    assert quantizer.step.shape == (30, )  # the training graph's table
    assert quantizer._last_index.shape == (47, )


def test_graph_classification_pool_trains_on_batches_of_any_size():
    torch.manual_seed(0)
    scheme = A2Q(num_groups=6, target_avg_bits=3.0)
    model = quantize_model(GCN(8, 16, 2, 4), scheme)
    for n, seed in ((20, 1), (35, 2), (11, 3)):
        train(model, scheme, 2, graph(num_nodes=n, num_edges=3 * n,
                                      seed=seed))
    assert model.convs[1].input_quantizer.step.shape == (6, )


def test_state_loads_strictly_and_rejects_another_shape():
    torch.manual_seed(0)
    scheme = A2Q(target_avg_bits=3.0)
    model = quantize_model(GCN(8, 16, 2, 4), scheme)
    train(model, scheme, 3, graph())
    state = model.state_dict()
    assert state['convs.0.input_quantizer.log_step'].shape == (30, )

    x, edge_index, _ = graph()
    fresh = quantize_model(GCN(8, 16, 2, 4), A2Q())
    fresh.load_state_dict(state)  # strict
    model.eval()
    assert torch.equal(fresh.eval()(x, edge_index), model(x, edge_index))

    pooled = quantize_model(GCN(8, 16, 2, 4), A2Q(num_groups=8))
    with pytest.raises(RuntimeError, match="input_quantizer.log_step.*30.*8"):
        pooled.load_state_dict(state)
    other_graph = quantize_model(GCN(8, 16, 2, 4), A2Q())
    other_graph(*graph(num_nodes=12)[:2])
    with pytest.raises(RuntimeError, match="num_groups"):
        other_graph.load_state_dict(state)


def test_save_load_round_trip_is_exact(tmp_path):
    torch.manual_seed(0)
    scheme = A2Q(target_avg_bits=3.0)
    model = quantize_model(GCN(8, 16, 2, 4), scheme)
    train(model, scheme, 3, graph())
    x, edge_index, _ = graph()
    x_new, edge_new, _ = graph(num_nodes=41, seed=4)
    model.eval()
    expected = model(x, edge_index), model(x_new, edge_new)
    save(model, tmp_path / 'a2q.safetensors')
    torch.manual_seed(1)
    fresh = load(tmp_path / 'a2q.safetensors',
                 quantize_model(GCN(8, 16, 2, 4), scheme)).eval()
    assert torch.equal(fresh(x, edge_index), expected[0])
    assert torch.equal(fresh(x_new, edge_new), expected[1])

    pooled = quantize_model(GCN(8, 16, 2, 4), A2Q(num_groups=8))
    with pytest.raises(ValueError, match='num_groups'):
        load(tmp_path / 'a2q.safetensors', pooled)


@pytest.mark.parametrize('kwargs,name', [
    (dict(init_bits=0), 'bits'),
    (dict(init_bits=9), 'bits'),
    (dict(weight_bits=9), 'bits'),
    (dict(target_avg_bits=0.5), 'target_avg_bits'),
    (dict(target_avg_bits=9), 'target_avg_bits'),
    (dict(memory_weight=-1.0), 'memory_weight'),
    (dict(num_groups=0), 'num_groups'),
    (dict(grad='x'), 'grad'),
    (dict(points=('input', 'message')), 'points'),
])
def test_scheme_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=f"'{name}'"):
        A2Q(**kwargs)


def test_scheme_rejects_non_number_target():
    with pytest.raises(TypeError, match="'target_avg_bits'"):
        A2Q(target_avg_bits='3')
