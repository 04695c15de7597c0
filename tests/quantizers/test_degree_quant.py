"""Tests of Degree-Quant: the probability rule, DegreeQuantizer and the
DegreeQuant scheme (pyg_qgnn.quantizers.degree_quant, pyg_qgnn.quantize)."""
import copy
import math

import pytest
import torch
from torch_geometric.data import Data
from torch_geometric.nn import GCNConv, MessagePassing
from torch_geometric.nn.models import GCN
from torch_geometric.utils import to_torch_csr_tensor

import pyg_qgnn
from pyg_qgnn import QAT, DegreeQuant, QuantLinear, calibrate, quantize_model
from pyg_qgnn.deploy import load, save
from pyg_qgnn.quantizers import (
    DegreeQuantizer,
    IntegerQuantizer,
    MinMaxObserver,
    MomentumObserver,
    PercentileObserver,
    protection_probability,
)
from pyg_qgnn.transforms import DegreeQuantMask
from pyg_qgnn.transforms import degree_quant_mask


OBSERVER_CLASSES = {'abs': MinMaxObserver, 'mom': MomentumObserver,
                    'per': PercentileObserver}


def graph(num_nodes=30, num_edges=120, channels=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(num_nodes, channels, generator=gen)
    edge_index = torch.randint(num_nodes, (2, num_edges), generator=gen)
    return x, edge_index


def ladder_graph(num_nodes=30, channels=8):
    r"""Node i has in-degree i (edges from random sources)."""
    gen = torch.Generator().manual_seed(0)
    target = torch.arange(num_nodes).repeat_interleave(torch.arange(num_nodes))
    source = torch.randint(num_nodes, target.shape, generator=gen)
    x = torch.randn(num_nodes, channels, generator=gen)
    return x, torch.stack([source, target])


def reference_probability(degree, p_min, p_max):
    degree = degree.tolist()
    n = len(degree)
    return torch.tensor([p_min + (p_max - p_min) *
                         sum(e <= d for e in degree) / n for d in degree])


# Probability rule ############################################################


@pytest.mark.parametrize('p_min,p_max', [(0.0, 0.1), (0.2, 0.9), (0.5, 0.5)])
def test_probability_is_scaled_degree_cdf(p_min, p_max):
    degree = torch.randint(0, 6, (40, ), generator=torch.Generator()
                           .manual_seed(1))
    prob = protection_probability(degree, p_min, p_max)
    assert torch.allclose(prob, reference_probability(degree, p_min, p_max))
    assert math.isclose(float(prob[degree.argmax()]), p_max, rel_tol=1e-6)
    order = degree.argsort()
    assert bool((prob[order].diff() >= 0).all())  # rises with in-degree
    assert bool(((prob >= p_min) & (prob <= p_max + 1e-7)).all())


def test_probability_per_graph_of_batch():
    gen = torch.Generator().manual_seed(2)
    degrees = [torch.randint(0, 9, (n, ), generator=gen) for n in (5, 12, 1)]
    batch = torch.cat([torch.full((d.numel(), ), i)
                       for i, d in enumerate(degrees)])
    prob = protection_probability(torch.cat(degrees), 0.1, 0.6, batch)
    expected = torch.cat([reference_probability(d, 0.1, 0.6)
                          for d in degrees])
    assert torch.allclose(prob, expected)


def test_probability_is_permutation_equivariant():
    degree = torch.randint(0, 5, (25, ), generator=torch.Generator()
                           .manual_seed(3))
    perm = torch.randperm(25, generator=torch.Generator().manual_seed(4))
    assert torch.equal(protection_probability(degree)[perm],
                       protection_probability(degree[perm]))


@pytest.mark.parametrize('p_min,p_max,name', [
    (-0.1, 0.1, 'p_min'), (0.0, 1.5, 'p_max'), (0.5, 0.1, 'p_min'),
    (float('nan'), 0.1, 'p_min'),
])
def test_bad_probabilities_raise(p_min, p_max, name):
    with pytest.raises(ValueError, match=f"'{name}'"):
        protection_probability(torch.zeros(3, dtype=torch.long), p_min, p_max)
    with pytest.raises(ValueError, match=f"'{name}'"):
        DegreeQuant(4, p_min, p_max)
    with pytest.raises(ValueError, match=f"'{name}'"):
        DegreeQuantMask(p_min, p_max)


def test_probability_rejects_bad_shapes():
    with pytest.raises(ValueError, match="'in_degree'"):
        protection_probability(torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="'batch'"):
        protection_probability(torch.zeros(3, dtype=torch.long),
                               batch=torch.zeros(2, dtype=torch.long))


# DegreeQuantizer #############################################################


def reference_fake_quant(x, mask, bits, clipped=False):
    r"""Plain torch: the range [min, max] ∪ {0} of the unprotected rows,
    asymmetric signed codes, (clipped) straight-through gradient;
    protected rows pass unchanged."""
    kept = x.detach()[~mask]
    lo, hi = kept.min().clamp(max=0), kept.max().clamp(min=0)
    qmin, qmax = -2 ** (bits - 1), 2 ** (bits - 1) - 1
    s = (hi / (qmax - qmin) - lo / (qmax - qmin))
    z = (qmin - torch.round(lo / s)).clamp(qmin, qmax)
    v = x / s + z
    q = torch.clamp(torch.round(v.detach()), qmin, qmax)
    xq = s * (q - z)
    if clipped:
        inside = ((v.detach() >= qmin) & (v.detach() <= qmax)).to(x.dtype)
        xq = xq.detach() + (x - x.detach()) * inside
    else:
        xq = x + (xq - x).detach()
    return torch.where(mask.view(-1, 1), x, xq)


@pytest.mark.parametrize('grad', ['ste', 'clipped'])
@pytest.mark.parametrize('bits', [2, 4, 8])
def test_quantizer_matches_reference_values_and_gradients(bits, grad):
    gen = torch.Generator().manual_seed(bits)
    x = torch.randn(20, 6, generator=gen) * 3
    x[3, 0] = 40.0  # an outlier in a protected row
    mask = torch.zeros(20, dtype=torch.bool)
    mask[[3, 7, 11]] = True
    upstream = torch.randn(20, 6, generator=gen)

    quantizer = DegreeQuantizer(bits, observer='abs', grad=grad).train()
    quantizer.protect(mask)
    x1 = x.clone().requires_grad_()
    out = quantizer(x1)
    out.backward(upstream)

    x2 = x.clone().requires_grad_()
    expected = reference_fake_quant(x2, mask, bits, clipped=grad == 'clipped')
    expected.backward(upstream)
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.equal(out[mask], x[mask])
    assert torch.allclose(x1.grad, x2.grad)
    assert torch.equal(x1.grad[mask], upstream[mask])
    # The range never saw the protected outlier.
    assert float(quantizer.observer.max_val) == float(x[~mask].max())


def test_quantizer_in_eval_quantizes_every_row():
    x, _ = graph()
    quantizer = DegreeQuantizer(4, observer='abs')
    plain = IntegerQuantizer(4, observer='abs')
    quantizer(x), plain(x)
    quantizer.eval(), plain.eval()
    quantizer.protect(torch.ones(x.size(0), dtype=torch.bool))
    assert torch.equal(quantizer(x), plain(x))


def test_mask_of_other_length_quantizes_every_row():
    x, _ = graph()
    quantizer = DegreeQuantizer(4, observer='abs')
    plain = IntegerQuantizer(4, observer='abs')
    quantizer.protect(torch.ones(x.size(0) + 1, dtype=torch.bool))
    assert torch.equal(quantizer(x), plain(x))


def test_fully_protected_input_is_returned_unchanged():
    x, _ = graph()
    quantizer = DegreeQuantizer(4)
    quantizer.protect(torch.ones(x.size(0), dtype=torch.bool))
    assert torch.equal(quantizer(x), x)


def test_quantizer_is_permutation_equivariant():
    x, _ = graph()
    mask = torch.rand(x.size(0), generator=torch.Generator()
                      .manual_seed(5)) < 0.3
    perm = torch.randperm(x.size(0), generator=torch.Generator()
                          .manual_seed(6))
    first, second = DegreeQuantizer(3, observer='abs'), \
        DegreeQuantizer(3, observer='abs')
    first.protect(mask)
    second.protect(mask[perm])
    assert torch.equal(first(x)[perm], second(x[perm]))


def test_quantizer_rejects_bad_settings():
    with pytest.raises(ValueError, match="'granularity'"):
        DegreeQuantizer(4, granularity='node')
    with pytest.raises(ValueError, match="'grad'"):
        DegreeQuantizer(4, grad='lsq')
    with pytest.raises(ValueError, match="'bits'"):
        DegreeQuantizer(9)
    with pytest.raises(TypeError, match="'mask'"):
        DegreeQuantizer(4).protect(torch.ones(3))


# The scheme: options #########################################################


@pytest.mark.parametrize('scheme_cls', [QAT, DegreeQuant])
@pytest.mark.parametrize('observer', ['abs', 'mom', 'per'])
@pytest.mark.parametrize('grad', ['ste', 'clipped'])
def test_six_study_configurations(scheme_cls, observer, grad):
    conv = quantize_model(GCNConv(8, 4), scheme_cls(4, observer=observer,
                                                    grad=grad))
    for quantizer in (conv.input_quantizer, conv.aggregate_quantizer):
        assert type(quantizer.observer) is OBSERVER_CLASSES[observer]
        assert quantizer.grad == grad and quantizer.bits == 4
        assert isinstance(quantizer, DegreeQuantizer) == \
            (scheme_cls is DegreeQuant)
    assert conv.weight_quantizer.grad == grad
    assert type(conv.weight_quantizer) is IntegerQuantizer


def test_positional_order_is_bits_p_min_p_max():
    scheme = DegreeQuant(4, 0.1, 0.3, 'abs', 'clipped')
    assert (scheme.bits, scheme.p_min, scheme.p_max, scheme.observer,
            scheme.grad) == (4, 0.1, 0.3, 'abs', 'clipped')
    assert 'p_max=0.3' in repr(scheme)


@pytest.mark.parametrize('bits', [0, 9])
def test_bad_bits_raise(bits):
    with pytest.raises(ValueError, match="'bits'"):
        DegreeQuant(bits)


def test_model_with_no_supported_layer_raises():
    with pytest.raises(TypeError, match="'model'"):
        quantize_model(torch.nn.Sequential(torch.nn.ReLU()), DegreeQuant(4))


# The scheme: masks ###########################################################


def spy_masks(quantizer):
    r"""Records the mask a quantizer holds each time it runs."""
    seen = []
    quantizer.register_forward_pre_hook(
        lambda module, args: seen.append(None if module.protected is None
                                         else module.protected.clone()))
    return seen


def test_protection_frequency_rises_with_degree_and_is_zero_in_eval():
    torch.manual_seed(0)
    x, edge_index = ladder_graph()
    conv = quantize_model(GCNConv(8, 8), DegreeQuant(4, 0.0, 0.5))
    seen = spy_masks(conv.input_quantizer)
    steps = 400
    for _ in range(steps):
        conv(x, edge_index)
    frequency = torch.stack(seen).float().mean(dim=0)
    expected = protection_probability(torch.arange(30), 0.0, 0.5)
    # Each node within 4.5 binomial standard deviations of its probability.
    tolerance = 4.5 * (expected * (1 - expected) / steps).sqrt() + 1e-3
    assert bool(((frequency - expected).abs() <= tolerance).all())
    assert frequency[20:].mean() > frequency[:10].mean() + 0.25

    conv.eval()
    seen.clear()
    conv(x, edge_index)
    assert seen == [None]


def test_eval_output_equals_qat_with_the_same_state():
    torch.manual_seed(0)
    x, edge_index = graph()
    dq = quantize_model(GCN(8, 16, 2, 4), DegreeQuant(4, 0.0, 0.5,
                                                      observer='abs'))
    for _ in range(3):
        dq(x, edge_index)
    qat = quantize_model(GCN(8, 16, 2, 4), QAT(4, observer='abs'))
    qat.load_state_dict(dq.state_dict())
    assert torch.equal(dq.eval()(x, edge_index), qat.eval()(x, edge_index))


def test_zero_probability_trains_exactly_like_qat():
    x, edge_index = graph()
    torch.manual_seed(0)
    model = GCN(8, 16, 2, 4)
    dq = quantize_model(model, DegreeQuant(4, 0.0, 0.0, observer='abs'))
    qat = quantize_model(model, QAT(4, observer='abs'))
    for _ in range(2):
        out_dq, out_qat = dq(x, edge_index), qat(x, edge_index)
        assert torch.equal(out_dq, out_qat)
        out_dq.square().sum().backward()
        out_qat.square().sum().backward()
    for (name, p), q in zip(dq.named_parameters(), qat.parameters()):
        assert torch.equal(p.grad, q.grad), name


def test_full_protection_leaves_only_weights_quantized():
    torch.manual_seed(0)
    x, edge_index = graph()
    model = GCN(8, 16, 2, 4)
    points = ('input', 'weight', 'message', 'aggregate', 'output')
    dq = quantize_model(model, DegreeQuant(4, 1.0, 1.0, points=points))
    weights_only = quantize_model(model, QAT(4, points=('weight', )))
    assert torch.allclose(dq(x, edge_index), weights_only(x, edge_index),
                          atol=1e-6)


def test_masks_are_redrawn_each_forward_and_per_layer():
    torch.manual_seed(0)
    x, edge_index = graph()
    model = quantize_model(GCN(8, 16, 2, 4), DegreeQuant(4, 0.4, 0.6))
    first = spy_masks(model.convs[0].input_quantizer)
    second = spy_masks(model.convs[1].input_quantizer)
    model(x, edge_index)
    model(x, edge_index)
    assert not torch.equal(first[0], first[1])
    assert not torch.equal(first[0], second[0])
    # Cleared after each layer's forward pass.
    assert model.convs[0].input_quantizer.protected is None


def test_messages_are_protected_with_their_target_node():
    torch.manual_seed(0)
    x, edge_index = graph()
    conv = quantize_model(GCNConv(8, 8), DegreeQuant(
        4, 0.3, 0.7, points=('input', 'weight', 'message', 'aggregate')))
    nodes = spy_masks(conv.input_quantizer)
    aggregates = spy_masks(conv.aggregate_quantizer)
    edges = spy_masks(conv.message_quantizer)
    propagated = []
    conv.register_propagate_forward_pre_hook(
        lambda module, inputs: propagated.append(inputs[0]))
    conv(x, edge_index)
    # GCN normalization adds self-loops: messages follow the propagated edges.
    assert edges[0].numel() == propagated[0].size(1) > edge_index.size(1)
    assert torch.equal(edges[0], nodes[0][propagated[0][1]])
    assert torch.equal(aggregates[0], nodes[0])


def test_sparse_adjacency_messages_are_protected_by_row():
    torch.manual_seed(0)
    x, edge_index = graph()
    adj_t = to_torch_csr_tensor(edge_index.flip(0), size=(30, 30))
    conv = quantize_model(GCNConv(8, 8), DegreeQuant(
        4, 0.3, 0.7, points=('input', 'weight', 'message')))
    nodes = spy_masks(conv.input_quantizer)
    edges = spy_masks(conv.message_quantizer)
    out = conv(x, adj_t)
    assert torch.isfinite(out).all()
    assert edges[0] is not None and edges[0].numel() > edge_index.size(1)
    assert nodes[0].numel() == 30


class MLPConv(MessagePassing):
    r"""Sum aggregation followed by a quantized linear layer (GIN-like)."""
    def __init__(self):
        super().__init__(aggr='add')
        self.lin = QuantLinear(8, 8, input_quantizer=DegreeQuantizer(4),
                               output_quantizer=DegreeQuantizer(4))

    def forward(self, x, edge_index):
        return self.lin(x + self.propagate(edge_index, x=x))


def test_linear_inside_a_conv_gets_the_node_mask():
    torch.manual_seed(0)
    x, edge_index = graph()
    conv = MLPConv()
    DegreeQuant(4, 0.5, 0.5).prepare(conv)
    inputs = spy_masks(conv.lin.input_quantizer)
    outputs = spy_masks(conv.lin.output_quantizer)
    conv(x, edge_index)
    assert inputs[0] is not None and torch.equal(inputs[0], outputs[0])


def test_top_level_linear_is_quantized_without_protection():
    torch.manual_seed(0)
    x, edge_index = graph()
    model = quantize_model(GCN(8, 16, 2, 4, jk='cat'), DegreeQuant(4, 1, 1))
    seen = spy_masks(model.lin.input_quantizer)
    model(x, edge_index)
    assert seen == [None]


def test_probabilities_are_computed_once_per_graph(monkeypatch):
    calls = []
    original = degree_quant_mask.protection_probability

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(degree_quant_mask, 'protection_probability', counting)
    x, edge_index = graph()
    model = quantize_model(GCN(8, 16, 3, 4), DegreeQuant(4))
    for _ in range(3):
        model(x, edge_index)
    assert len(calls) == 1
    model(x, edge_index.clone())  # another graph object
    assert len(calls) == 2
    edge_index[0, 0] = (edge_index[0, 0] + 1) % 30  # modified in place
    model(x, edge_index)
    assert len(calls) == 3


def test_transform_probabilities_are_used_with_the_data_object():
    x, edge_index = graph()

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = GCNConv(8, 8)

        def forward(self, data):
            return self.conv(data.x, data.edge_index)

    torch.manual_seed(0)
    model = quantize_model(Net(), DegreeQuant(4, 0.0, 0.0))
    seen = spy_masks(model.conv.input_quantizer)
    # A fresh edge_index (not the transform's) but the attached probability.
    data = DegreeQuantMask(1.0, 1.0)(Data(x=x, edge_index=edge_index))
    data.edge_index = data.edge_index.clone()
    model(data)
    assert seen[0] is not None and bool(seen[0].all())


def test_hooks_follow_deepcopy_and_are_not_duplicated():
    x, edge_index = graph()
    model = quantize_model(GCN(8, 16, 2, 4), DegreeQuant(4, 1.0, 1.0))
    conv = model.convs[0]
    hooks = (len(conv._forward_pre_hooks), len(conv._forward_hooks),
             len(conv._propagate_forward_pre_hooks),
             len(model._forward_pre_hooks))
    DegreeQuant(4, 0.0, 0.2).prepare(model)
    assert (len(conv._forward_pre_hooks), len(conv._forward_hooks),
            len(conv._propagate_forward_pre_hooks),
            len(model._forward_pre_hooks)) == hooks
    assert conv._degree_quant_hooks.p_max == 0.2

    clone = copy.deepcopy(model)
    seen_clone = spy_masks(clone.convs[0].input_quantizer)
    seen_original = spy_masks(model.convs[0].input_quantizer)
    clone(x, edge_index)
    assert len(seen_clone) == 1 and seen_clone[0] is not None
    assert seen_original == []


def test_permutation_equivariant_in_eval():
    x, edge_index = graph()
    torch.manual_seed(0)
    model = quantize_model(GCN(8, 16, 2, 4), DegreeQuant(4, observer='abs'))
    calibrate(model, x, edge_index)
    model.eval()
    perm = torch.randperm(30, generator=torch.Generator().manual_seed(7))
    inverse = perm.argsort()
    out = model(x, edge_index)
    out_perm = model(x[perm], inverse[edge_index])
    assert torch.allclose(out[perm], out_perm, atol=1e-5)


def test_save_load_round_trip_is_exact(tmp_path):
    x, edge_index = graph()
    y = torch.randint(4, (30, ), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    scheme = DegreeQuant(4, 0.0, 0.3)
    model = quantize_model(GCN(8, 16, 2, 4), scheme)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(3):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x, edge_index), y).backward()
        optimizer.step()
    model.eval()
    expected = model(x, edge_index)
    save(model, tmp_path / 'dq.safetensors')
    torch.manual_seed(1)
    fresh = load(tmp_path / 'dq.safetensors',
                 quantize_model(GCN(8, 16, 2, 4), scheme)).eval()
    assert torch.equal(fresh(x, edge_index), expected)
    assert torch.equal(fresh(x, edge_index), expected)


def test_training_step_runs_with_quantizers_off_as_float():
    x, edge_index = graph()
    torch.manual_seed(0)
    model = GCN(8, 16, 2, 4)
    dq = quantize_model(model, DegreeQuant(4, 0.2, 0.4))
    dq.apply(pyg_qgnn.disable_fake_quant)
    assert torch.equal(dq(x, edge_index), model(x, edge_index))
