r"""Every quantized twin under :func:`torch.jit.script` and
:func:`torch.compile`, wherever its PyG parent works there.

TorchScript: the parent is scripted first; where that fails (GATConv in this
PyG release, SAGEConv with several aggregations), or where the scripted
parent fails on an adjacency format, the case is skipped with the parent's
reason. Elsewhere the scripted twin must compute exactly what the scripted
parent computes with its quantizers off, and exactly what the eager twin
computes with quantizers TorchScript can compile.

torch.compile runs the twins with fake quantization on. The backend is
:obj:`"aot_eager"` (Dynamo capture and AOTAutograd, as every backend uses
them) unless :obj:`PYG_QGNN_COMPILE_BACKEND` names another, such as
:obj:`"inductor"` (minutes on two CPU cores).
"""
import copy
import functools
import os

import pytest
import torch
from torch import Tensor
from torch_geometric.nn import GATConv, GCNConv, GINConv, SAGEConv
from torch_geometric.nn import Linear as PyGLinear

import pyg_qgnn
from pyg_qgnn import QAT, IntegerQuantizer, QuantLinear
from pyg_qgnn.quantize import QUANTIZED_LAYERS
from pyg_qgnn.quantizers import Quantizer
from tests.nn.conv.test_quant_gcn_conv import graph
from tests.nn.conv.test_quant_gin_conv import (
    FORMATS,
    adjacency,
    assert_same,
    forward_backward,
)

pytestmark = pytest.mark.filterwarnings(
    'ignore:.*TorchScript.*:DeprecationWarning')

BACKEND = os.environ.get('PYG_QGNN_COMPILE_BACKEND', 'aot_eager')

EVERY_POINT = QAT(bits=8, points=('input', 'weight', 'message', 'aggregate',
                                  'output'))


def mlp():
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(),
                               torch.nn.Linear(8, 5))


#: name -> the PyG float layer (6 input channels).
PARENTS = {
    'Linear': lambda: PyGLinear(6, 5),
    'GCNConv': lambda: GCNConv(6, 5),
    'GCNConv-decomposed': lambda: GCNConv(6, 5, decomposed_layers=2),
    'GCNConv-no-normalize': lambda: GCNConv(6, 5, normalize=False),
    'GINConv': lambda: GINConv(mlp(), train_eps=True),
    'SAGEConv': lambda: SAGEConv(6, 5),
    'SAGEConv-max-project': lambda: SAGEConv(6, 5, aggr='max', project=True,
                                             normalize=True),
    'SAGEConv-lstm': lambda: SAGEConv(6, 5, aggr='lstm'),
    'SAGEConv-multi-aggr': lambda: SAGEConv(6, 5, aggr=['mean', 'max']),
    'GATConv': lambda: GATConv(6, 4, heads=2),
    'GATConv-edge-residual': lambda: GATConv(6, 4, heads=2, edge_dim=3,
                                             residual=True),
}


def inputs(name, fmt):
    r"""Call arguments of the layer :obj:`name` on a small graph whose edges
    are sorted by target (as aggr='lstm' requires)."""
    x, edge_index = graph(num_nodes=9, num_edges=24)
    if name == 'Linear':
        return (x, )
    edge_index = edge_index[:, edge_index[1].argsort(stable=True)]
    args = (x, adjacency(edge_index, fmt, 9))
    if 'edge' in name:
        gen = torch.Generator().manual_seed(1)
        args += (torch.randn(edge_index.size(1), 3, generator=gen), )
    return args


def quantized(name, scheme=EVERY_POINT):
    r"""The parent layer :obj:`name` and its twin under :obj:`scheme` (a
    GINConv's network included)."""
    torch.manual_seed(0)
    parent = PARENTS[name]()
    model = pyg_qgnn.quantize_model(torch.nn.ModuleList([parent]), scheme)
    return parent, model[0]


class FixedStep(Quantizer):
    r"""A quantizer TorchScript can compile: rounding to a fixed step, with
    the straight-through gradient."""
    def __init__(self, step: float = 0.05):
        super().__init__()
        self.step = step

    def reset_parameters(self):
        pass

    def forward(self, x: Tensor) -> Tensor:
        if not self.fake_quant_enabled:
            return x
        return torch.round(x.detach() / self.step) * self.step + (
            x - x.detach())


class FixedStepScheme(pyg_qgnn.QuantScheme):
    def quantizer(self, point, layer):
        return FixedStep()


@functools.lru_cache(maxsize=None)
def scripted_parent(name):
    r"""The parent and its scripted form, or the reason PyG cannot script
    it."""
    torch.manual_seed(0)
    parent = PARENTS[name]()
    try:
        return parent, torch.jit.script(parent)
    except Exception as error:  # TorchScript raises several error types
        return parent, f"PyG's {name} does not script: " + \
            str(error).strip().splitlines()[0]


def run_or_skip(module, args, what):
    try:
        return forward_backward(module, *args)
    except Exception as error:
        pytest.skip(f'{what} fails: {str(error).strip().splitlines()[-1]}')


# TorchScript #################################################################


def cases(names):
    r"""(name, adjacency format) pairs; a dense layer takes no adjacency."""
    return [(name, fmt) for name in names
            for fmt in (['edge_index'] if name == 'Linear' else FORMATS)]


@functools.lru_cache(maxsize=None)
def scripted_twins(name):
    r"""The scripted twins of the parent :obj:`name`: with no quantizers,
    and with a quantizer at every point, switched off."""
    parent, _ = scripted_parent(name)
    bare = QUANTIZED_LAYERS[type(parent)].from_float(parent)
    _, disabled = quantized(name)
    disabled.apply(pyg_qgnn.disable_fake_quant)
    assert disabled.state_dict().keys() > parent.state_dict().keys()
    return torch.jit.script(bare), torch.jit.script(disabled)


@pytest.mark.parametrize('name,fmt', cases(PARENTS))
def test_script_equals_scripted_parent(name, fmt):
    _, script = scripted_parent(name)
    if isinstance(script, str):
        pytest.skip(script)
    args = inputs(name, fmt)
    expected = run_or_skip(script, args, f'scripted {name} on {fmt}')
    for twin in scripted_twins(name):
        assert_same(forward_backward(twin, *args), expected)


@pytest.mark.parametrize('name', ['Linear', 'GCNConv', 'GINConv', 'SAGEConv'])
def test_script_with_quantizers_on_names_them(name):
    _, qtwin = quantized(name)
    args = inputs(name, 'edge_index')
    expected = qtwin(*args)
    with pytest.raises(RuntimeError, match="cannot compile the "
                       "'input_quantizer'.*disable_fake_quant"):
        torch.jit.script(qtwin)
    # The twin itself is left as it was.
    assert torch.equal(qtwin(*args), expected)
    assert isinstance(qtwin.input_quantizer, IntegerQuantizer)


def test_scripting_leaves_quantizers_in_place():
    _, qtwin = quantized('GCNConv')
    args = inputs('GCNConv', 'edge_index')
    qtwin.apply(pyg_qgnn.disable_fake_quant)
    keys = list(qtwin.state_dict())
    float_out = torch.jit.script(qtwin)(*args)
    assert list(qtwin.state_dict()) == keys
    qtwin.apply(pyg_qgnn.enable_fake_quant)
    assert not torch.allclose(qtwin(*args), float_out, atol=1e-4)


def test_script_refuses_a_point_it_cannot_name():
    class EdgeQuantLinear(QuantLinear):
        quant_points = QuantLinear.quant_points + ('edge', )

        def __init__(self, *args, edge_quantizer=None, **kwargs):
            super().__init__(*args, **kwargs)
            self.register_module('edge_quantizer', edge_quantizer)

    lin = EdgeQuantLinear(6, 5, edge_quantizer=FixedStep())
    with pytest.raises(RuntimeError, match="'edge_quantizer'.*names only"):
        torch.jit.script(lin)
    lin.edge_quantizer.fake_quant_enabled = False
    x = inputs('Linear', 'edge_index')[0]
    assert torch.equal(torch.jit.script(lin)(x), lin(x))


@pytest.mark.parametrize('name,fmt', cases(['Linear', 'GCNConv',
                                             'GCNConv-decomposed', 'GINConv',
                                             'SAGEConv']))
def test_script_with_scriptable_quantizers_equals_eager(name, fmt):
    parent, script = scripted_parent(name)
    if isinstance(script, str):
        pytest.skip(script)
    args = inputs(name, fmt)
    run_or_skip(script, args, f'scripted {name} on {fmt}')
    _, qtwin = quantized(name, FixedStepScheme())
    points = [m for m in qtwin.modules() if isinstance(m, FixedStep)]
    assert len(points) >= 3
    expected = forward_backward(qtwin, *args)
    assert_same(forward_backward(torch.jit.script(qtwin), *args), expected)
    qtwin.apply(pyg_qgnn.disable_fake_quant)  # the steps are not a no-op
    assert not torch.allclose(qtwin(*args), expected[0], atol=1e-4)


# torch.compile ###############################################################


def assert_close_states(first, second):
    r"""Equal outputs, gradients and quantizer states up to float
    reassociation in the compiled backward."""
    (out1, grads1), (out2, grads2) = first, second
    torch.testing.assert_close(out1, out2)
    # torch.compile's wrapper prefixes parameter names.
    grads1 = {k.replace('_orig_mod.', ''): v for k, v in grads1.items()}
    assert grads1.keys() == grads2.keys() and grads1
    for name in grads1:
        torch.testing.assert_close(grads1[name], grads2[name], msg=name)


def compare_compiled(eager, args, steps=1):
    r"""Runs :obj:`steps` training steps of :obj:`eager` and of a compiled
    copy: equal outputs, gradients and quantizer states."""
    compiled = copy.deepcopy(eager)
    torch._dynamo.reset()
    compiled_call = torch.compile(compiled, backend=BACKEND)
    for step in range(steps):
        assert_close_states(forward_backward(compiled_call, *args, seed=step),
                            forward_backward(eager, *args, seed=step))
    for (key, a), b in zip(eager.state_dict().items(),
                           compiled.state_dict().values()):
        torch.testing.assert_close(a, b, msg=key)


# One case per twin (compiling is slow on small machines); the GraphSAGE
# case takes the per-edge message path of a sparse adjacency. The convs'
# ranges are calibrated, then frozen as in fine-tuning: range tracking
# breaks Dynamo's graphs, which makes compiling three times slower, and is
# left on for the linear layer only, over two steps.
@pytest.mark.parametrize('name,fmt', [('Linear', 'edge_index'),
                                      ('GCNConv', 'edge_index'),
                                      ('GINConv', 'edge_index'),
                                      ('SAGEConv', 'csr'),
                                      ('GATConv', 'edge_index')])
def test_compile_equals_eager_with_quantizers_on(name, fmt):
    _, eager = quantized(name)
    if name == 'GATConv':  # not among QAT's points
        eager.attention_quantizer = IntegerQuantizer(8)
    if name == 'GINConv':
        assert isinstance(eager.nn[0], QuantLinear)
    args = inputs(name, fmt)
    calls = []
    if name != 'Linear':
        eager.message_quantizer.register_forward_hook(
            lambda module, inputs, output: calls.append(inputs[0].shape))
    eager(*args)
    if name in ('GCNConv', 'GATConv'):  # self-loops added
        assert calls == [(24 + 9, 5)] or calls == [(24 + 9, 2, 4)]
    elif name != 'Linear':  # one message per edge, even on the CSR path
        assert calls == [(24, 6)]
    if name != 'Linear':
        eager.apply(pyg_qgnn.freeze_observer)
    compare_compiled(eager, args, steps=2 if name == 'Linear' else 1)
