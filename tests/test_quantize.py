
import pytest
import torch
from torch_geometric.nn import (
    GATConv,
    GATv2Conv,
    GCNConv,
    GINConv,
    MessagePassing,
    SAGEConv,
)
from torch_geometric.nn import Linear as PyGLinear
from torch_geometric.nn.models import GAT, GCN, GIN, GraphSAGE

import pyg_qgnn
from pyg_qgnn import (
    QAT,
    IntegerQuantizer,
    QuantGATConv,
    QuantGCNConv,
    QuantGINConv,
    QuantLinear,
    QuantSAGEConv,
    QuantScheme,
    calibrate,
    quantize_model,
    register_quantized_layer,
    supported_layers,
)
from pyg_qgnn.nn import QuantLayer
from pyg_qgnn.quantize import QUANTIZED_LAYERS
from pyg_qgnn.quantizers import Quantizer


def graph(num_nodes=20, num_edges=60, channels=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(num_nodes, channels, generator=gen)
    edge_index = torch.randint(num_nodes, (2, num_edges), generator=gen)
    return x, edge_index


def float_layers(model):
    return [name for name, m in model.named_modules()
            if type(m) in (GCNConv, torch.nn.Linear, PyGLinear)]


def params(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


# Swapping layers #############################################################


def test_gcn_model_every_conv_swapped():
    torch.manual_seed(0)
    model = GCN(8, 16, num_layers=2, out_channels=4)
    qmodel = quantize_model(model, QAT(bits=8))
    assert len(qmodel.convs) == 2
    assert all(type(conv) is QuantGCNConv for conv in qmodel.convs)
    assert float_layers(qmodel) == []
    conv = qmodel.convs[0]
    assert isinstance(conv.input_quantizer, IntegerQuantizer)
    assert isinstance(conv.weight_quantizer, IntegerQuantizer)
    assert isinstance(conv.aggregate_quantizer, IntegerQuantizer)
    assert conv.message_quantizer is None and conv.output_quantizer is None
    assert conv.input_quantizer.bits == 8


def test_weights_kept_and_float_when_disabled():
    torch.manual_seed(0)
    x, edge_index = graph()
    model = GCN(8, 16, num_layers=2, out_channels=4).eval()
    expected = model(x, edge_index)
    qmodel = quantize_model(model, QAT(bits=4))
    for key, value in model.state_dict().items():
        assert torch.equal(qmodel.state_dict()[key], value)
    assert not torch.allclose(qmodel(x, edge_index), expected, atol=1e-4)
    qmodel.apply(pyg_qgnn.disable_fake_quant)
    assert torch.equal(qmodel(x, edge_index), expected)


def test_final_linear_of_jk_model_swapped():
    model = GCN(8, 16, num_layers=2, out_channels=4, jk='cat')
    assert type(model.lin) is torch.nn.Linear
    qmodel = quantize_model(model, QAT(bits=8))
    assert type(qmodel.lin) is QuantLinear
    assert isinstance(qmodel.lin.weight_quantizer, IntegerQuantizer)
    assert float_layers(qmodel) == []
    x, edge_index = graph()
    assert qmodel(x, edge_index).shape == (20, 4)


def test_sequential_with_linear_swapped():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(),
                                PyGLinear(16, 4))
    qmodel = quantize_model(model, QAT(bits=8))
    assert type(qmodel[0]) is QuantLinear and type(qmodel[2]) is QuantLinear
    assert type(qmodel[1]) is torch.nn.ReLU
    x = torch.randn(5, 8)
    qmodel.apply(pyg_qgnn.disable_fake_quant)
    assert torch.equal(qmodel(x), model(x))


def test_returns_copy_by_default():
    model = GCN(8, 16, num_layers=2, out_channels=4)
    before = params(model)
    convs = list(model.convs)
    qmodel = quantize_model(model, QAT(bits=8))
    assert qmodel is not model
    assert list(model.convs) == convs
    assert all(type(conv) is GCNConv for conv in model.convs)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])
    # Training the copy leaves the original alone.
    x, edge_index = graph()
    qmodel(x, edge_index).sum().backward()
    with torch.no_grad():
        for p in qmodel.parameters():
            p.add_(1.0)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


def test_inplace():
    model = GCN(8, 16, num_layers=2, out_channels=4)
    qmodel = quantize_model(model, QAT(bits=8), inplace=True)
    assert qmodel is model
    assert all(type(conv) is QuantGCNConv for conv in model.convs)


@pytest.mark.parametrize('training', [True, False])
def test_bare_gcn_conv_returns_twin(training):
    torch.manual_seed(0)
    conv = GCNConv(8, 4, improved=True).train(training)
    twin = quantize_model(conv, QAT(bits=8))
    assert type(twin) is QuantGCNConv
    assert twin.improved and twin.training == training
    assert torch.equal(twin.lin.weight, conv.lin.weight)
    assert type(conv) is GCNConv  # original untouched


def test_bare_linear_returns_twin():
    lin = torch.nn.Linear(8, 4)
    twin = quantize_model(lin, QAT(bits=4))
    assert type(twin) is QuantLinear
    assert twin.weight_quantizer.bits == 4


def test_quantizing_twice_does_not_rewrap():
    model = GCN(8, 16, num_layers=2, out_channels=4, jk='cat')
    once = quantize_model(model, QAT(bits=8))
    twice = quantize_model(once, QAT(bits=4))
    assert all(type(conv) is QuantGCNConv for conv in twice.convs)
    assert type(twice.lin) is QuantLinear
    assert all(type(conv.lin) is QuantLinear for conv in twice.convs)
    # Same structure (same modules, same quantizers) as after one pass.
    assert ([(n, type(m)) for n, m in twice.named_modules()] ==
            [(n, type(m)) for n, m in once.named_modules()])
    assert twice.convs[0].input_quantizer.bits == 8
    assert type(quantize_model(once.convs[0], QAT(bits=4))) is QuantGCNConv


def test_message_point_creates_message_quantizer():
    model = GCN(8, 16, num_layers=2, out_channels=4)
    qmodel = quantize_model(model,
                            QAT(bits=8, points=('input', 'weight', 'message')))
    for conv in qmodel.convs:
        assert isinstance(conv.message_quantizer, IntegerQuantizer)
        assert conv.aggregate_quantizer is None


def test_weight_quantizer_is_symmetric_and_dynamic():
    qconv = quantize_model(GCNConv(8, 4), QAT(bits=4, observer='abs'))
    assert qconv.weight_quantizer.symmetric and qconv.weight_quantizer.dynamic
    assert not qconv.input_quantizer.dynamic


# Unsupported layers ##########################################################


def test_unsupported_layer_raises_with_path():
    model = GAT(8, 16, num_layers=2, out_channels=4, v2=True)
    with pytest.raises(TypeError) as info:
        quantize_model(model, QAT(bits=8))
    message = str(info.value)
    assert 'GCNConv' in message
    assert "'convs.0'" in message
    assert 'GATv2Conv' in message


def test_unsupported_layer_warns_when_not_strict():
    model = torch.nn.ModuleDict(dict(gcn=GCNConv(8, 16),
                                     gat=GATv2Conv(16, 4)))
    with pytest.warns(UserWarning, match="'gat'.*GATv2Conv"):
        qmodel = quantize_model(model, QAT(bits=8), strict=False)
    assert type(qmodel['gat']) is GATv2Conv
    assert type(qmodel['gcn']) is QuantGCNConv


def test_supported_layers_lists_gcn_conv():
    assert 'GCNConv' in supported_layers()
    assert 'Linear' in supported_layers()


# Argument checks #############################################################


@pytest.mark.parametrize('kwargs,name', [
    (dict(bits=9), 'bits'),
    (dict(bits=0), 'bits'),
    (dict(observer='x'), 'observer'),
    (dict(grad='x'), 'grad'),
    (dict(points=('foo', )), 'points'),
])
def test_qat_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=f"'{name}'"):
        QAT(**kwargs)


def test_qat_rejects_non_int_bits():
    with pytest.raises(TypeError, match="'bits'"):
        QAT(bits=8.0)


@pytest.mark.parametrize('scheme', [object(), 'int8', 8, None])
def test_non_scheme_raises_type_error(scheme):
    with pytest.raises(TypeError, match="'scheme'"):
        quantize_model(GCN(8, 16, 2, 4), scheme)


def test_non_module_raises_type_error():
    with pytest.raises(TypeError, match="'model'"):
        quantize_model('model', QAT(bits=8))


def test_register_rejects_non_quant_layer():
    before = dict(QUANTIZED_LAYERS)
    with pytest.raises(TypeError, match='QuantLayer'):
        register_quantized_layer(GATConv, torch.nn.Linear)
    with pytest.raises(TypeError, match='QuantLayer'):
        register_quantized_layer(GATConv, QuantGCNConv(8, 4))
    assert QUANTIZED_LAYERS == before


def test_register_custom_twin():
    class MyConv(GCNConv):
        pass

    class QuantMyConv(QuantGCNConv):
        pass

    assert issubclass(QuantMyConv, QuantLayer)
    register_quantized_layer(MyConv, QuantMyConv)
    try:
        qmodel = quantize_model(torch.nn.Sequential(MyConv(8, 4)), QAT())
        assert type(qmodel[0]) is QuantMyConv
    finally:
        del QUANTIZED_LAYERS[MyConv]


def test_custom_scheme():
    class InputOnly(QuantScheme):
        def quantizer(self, point, layer):
            return IntegerQuantizer(4) if point == 'input' else None

    qconv = quantize_model(GCNConv(8, 4), InputOnly())
    assert qconv.input_quantizer.bits == 4
    assert qconv.weight_quantizer is None and qconv.aggregate_quantizer is None


# Calibration #################################################################


def test_calibrate_observes_without_dropout_and_restores_modes():
    torch.manual_seed(0)
    x, edge_index = graph()
    model = GCN(8, 16, num_layers=2, out_channels=4, dropout=0.5)
    qmodel = quantize_model(model, QAT(bits=8, observer='abs'))
    qmodel.train()
    qmodel.convs[1].eval()  # a mixed set of modes must come back as it was
    modes = {name: m.training for name, m in qmodel.named_modules()}
    quantizers = [m for m in qmodel.modules() if isinstance(m, Quantizer)]
    assert quantizers and not any(q.initialized for q in quantizers)

    assert calibrate(qmodel, x, edge_index) is qmodel
    assert {name: m.training for name, m in qmodel.named_modules()} == modes
    assert all(q.initialized for q in quantizers)
    assert torch.equal(qmodel.convs[0].input_quantizer.observer.max_val,
                       x.max().view(1))

    # The second conv saw relu(conv1(x)) with no dropout.
    qmodel.eval()
    hidden = qmodel.convs[0](x, edge_index).relu()
    observer = qmodel.convs[1].input_quantizer.observer
    assert torch.allclose(observer.max_val, hidden.max().view(1))
    assert torch.allclose(observer.min_val, hidden.min().view(1))


def test_calibrate_restores_modes_on_error():
    model = quantize_model(GCN(8, 16, 2, 4), QAT(bits=8)).train()
    bad = torch.ones(20, 8, dtype=torch.long)
    with pytest.raises(TypeError):
        calibrate(model, bad, graph()[1])
    assert all(m.training for m in model.modules())


def test_calibrate_does_not_track_gradients():
    model = quantize_model(GCN(8, 16, 2, 4), QAT(bits=8))
    calibrate(model, *graph())
    assert all(p.grad is None for p in model.parameters())


# Accuracy sanity #############################################################


def trained_gcn():
    torch.manual_seed(0)
    x, edge_index = graph(num_nodes=60, num_edges=240)
    y = torch.randint(4, (60, ))
    model = GCN(8, 32, num_layers=2, out_channels=4)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(30):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x, edge_index), y)
        loss.backward()
        optimizer.step()
    return model.eval(), x, edge_index


@torch.no_grad()
def relative_error(model, bits, x, edge_index):
    qmodel = quantize_model(model, QAT(bits=bits, observer='abs'))
    calibrate(qmodel, x, edge_index)
    qmodel.eval()
    expected = model(x, edge_index)
    out = qmodel(x, edge_index)
    return float((out - expected).norm() / expected.norm())


def test_int8_close_to_float_and_int4_farther():
    model, x, edge_index = trained_gcn()
    err8 = relative_error(model, 8, x, edge_index)
    err4 = relative_error(model, 4, x, edge_index)
    err2 = relative_error(model, 2, x, edge_index)
    assert 0 < err8 < 0.05
    assert err4 > err8
    assert err2 > err4


# Messages point at the user ##################################################


class _Unsupported(MessagePassing):
    def forward(self, x, edge_index):
        return self.propagate(edge_index, x=x)


def test_skip_warning_points_at_the_callers_line():
    model = torch.nn.ModuleDict(dict(gcn=GCNConv(8, 16),
                                     inner=torch.nn.ModuleDict(
                                         dict(conv=_Unsupported()))))
    with pytest.warns(UserWarning, match="'inner.conv'") as record:
        quantize_model(model, QAT(bits=8), strict=False)
    assert len(record) == 1
    assert record[0].filename == __file__


def test_nothing_quantized_warns_once_listing_supported_layers():
    model = torch.nn.Sequential(torch.nn.ReLU(), _Unsupported())
    with pytest.warns(UserWarning) as record:
        out = quantize_model(model, QAT(bits=8), strict=False)
    messages = [str(w.message) for w in record]
    assert sum('no layer that quantize_model can swap' in m
               for m in messages) == 1
    assert all(w.filename == __file__ for w in record)
    assert 'GCNConv' in messages[-1] and type(out[1]) is _Unsupported


def test_nothing_quantized_raises_when_strict():
    with pytest.raises(TypeError, match="'model'.*no layer.*GCNConv"):
        quantize_model(torch.nn.Sequential(torch.nn.ReLU()), QAT(bits=8))


# GIN, GraphSAGE and GAT models ###############################################

MODELS = [
    (GIN, GINConv, QuantGINConv, dict()),
    (GraphSAGE, SAGEConv, QuantSAGEConv, dict()),
    (GAT, GATConv, QuantGATConv, dict(heads=2)),
    (GAT, GATConv, QuantGATConv, dict(heads=2, residual=True, jk='cat')),
]


@pytest.mark.parametrize('model_cls,conv_cls,twin_cls,kwargs', MODELS)
def test_pyg_model_swapped_whole(model_cls, conv_cls, twin_cls, kwargs):
    torch.manual_seed(0)
    x, edge_index = graph()
    model = model_cls(8, 16, num_layers=3, out_channels=4, **kwargs).eval()
    expected = model(x, edge_index)
    qmodel = quantize_model(model, QAT(bits=4))
    assert len(qmodel.convs) == 3
    assert all(type(conv) is twin_cls for conv in qmodel.convs)
    left = [name for name, m in qmodel.named_modules()
            if type(m) in (conv_cls, torch.nn.Linear, PyGLinear)]
    assert left == []
    for key, value in model.state_dict().items():
        assert torch.equal(qmodel.state_dict()[key], value)
    out = qmodel(x, edge_index)
    assert out.shape == (20, 4)
    assert not torch.allclose(out, expected, atol=1e-3)
    qmodel.apply(pyg_qgnn.disable_fake_quant)
    assert torch.equal(qmodel(x, edge_index), expected)


def test_gin_network_quantized_under_the_same_scheme():
    model = GIN(8, 16, num_layers=2, out_channels=4)
    assert type(model.convs[0].nn.lins[0]) is PyGLinear
    qmodel = quantize_model(model, QAT(bits=4, observer='abs'))
    for conv in qmodel.convs:
        assert conv.input_quantizer.bits == 4
        assert conv.message_quantizer is None
        for lin in conv.nn.lins:
            assert type(lin) is QuantLinear
            assert lin.input_quantizer.bits == lin.weight_quantizer.bits == 4
            assert lin.weight_quantizer.dynamic
            assert lin.input_quantizer.observer is not \
                conv.input_quantizer.observer
    # The network's layers are quantized once, not again on a second pass.
    again = quantize_model(qmodel, QAT(bits=8))
    assert again.convs[0].nn.lins[0].weight_quantizer.bits == 4


@pytest.mark.parametrize('model_cls,conv_cls,twin_cls,kwargs', MODELS[:3])
def test_pyg_model_trains_and_stays_close_at_int8(model_cls, conv_cls,
                                                  twin_cls, kwargs):
    torch.manual_seed(0)
    x, edge_index = graph()
    y = torch.randint(4, (20, ))
    model = model_cls(8, 16, num_layers=2, out_channels=4, **kwargs)
    qmodel = quantize_model(model, QAT(bits=8, observer='abs'))
    optimizer = torch.optim.Adam(qmodel.parameters(), lr=0.01)
    losses = []
    for _ in range(5):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(qmodel(x, edge_index), y)
        loss.backward()
        assert all(p.grad is not None for p in qmodel.parameters()
                   if p.requires_grad)
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    qmodel.eval()
    with torch.no_grad():
        out = qmodel(x, edge_index)
        qmodel.apply(pyg_qgnn.disable_fake_quant)
        ref = qmodel(x, edge_index)
    assert 0 < float((out - ref).norm() / ref.norm()) < 0.05


def test_supported_layers_lists_gin_sage_gat():
    assert {'GINConv', 'SAGEConv', 'GATConv'} <= set(supported_layers())


def test_bare_gin_conv_gets_a_quantized_network():
    from torch_geometric.nn import GINConv
    conv = GINConv(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(),
                                       torch.nn.Linear(8, 8)))
    qconv = quantize_model(conv, QAT(bits=8))
    assert all(type(m) is not torch.nn.Linear for m in qconv.modules())
    assert sum(isinstance(m, QuantLinear) for m in qconv.modules()) == 2


def test_attention_point_is_accepted():
    qconv = quantize_model(GATConv(4, 4, heads=2),
                           QAT(bits=8, points=('input', 'attention')))
    assert qconv.attention_quantizer is not None
    assert qconv.aggregate_quantizer is None
