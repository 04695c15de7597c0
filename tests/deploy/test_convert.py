"""Tests of the deployment registry, convert() and nbytes()."""
import copy

import pytest
import torch
from torch import nn
from torch_geometric.nn.models import GCN

from pyg_qgnn import QAT, quantize_model
from pyg_qgnn.deploy import (
    DeployedBinLinear,
    DeployedLayer,
    convert,
    deployable_layers,
    nbytes,
    register_deployed_layer,
)
from pyg_qgnn.deploy.convert import DEPLOYED_LAYERS
from pyg_qgnn.nn import QuantGCNConv
from pyg_qgnn.nn.dense.bin_linear import BinLinear


class Doubler(nn.Module):
    r"""A stand-in 'trained twin' with one float weight."""
    def __init__(self, width=4):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(width))

    def forward(self, x):
        return 2 * x * self.weight


class DeployedDoubler(DeployedLayer):
    r"""Stores the weight as int8 codes of its rounded value."""
    def __init__(self, width=4):
        super().__init__()
        self.register_buffer('codes', torch.zeros(width, dtype=torch.int8))

    @classmethod
    def from_trained(cls, twin):
        layer = cls(twin.weight.numel())
        layer.codes.copy_(twin.weight.detach().round().to(torch.int8))
        return layer

    def forward(self, x):
        return 2 * x * self.codes


@pytest.fixture
def doubler_registered(monkeypatch):
    monkeypatch.setitem(DEPLOYED_LAYERS, Doubler, DeployedDoubler)


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 4), Doubler(),
                         nn.Sequential(nn.ReLU(), Doubler())).eval()


def test_convert_swaps_registered_layers_only(doubler_registered):
    original = model()
    state = copy.deepcopy(original.state_dict())
    deployed = convert(original)
    assert isinstance(deployed[0], nn.Linear)
    assert isinstance(deployed[1], DeployedDoubler)
    assert isinstance(deployed[2][1], DeployedDoubler)
    assert torch.equal(deployed[1].codes,
                       original[1].weight.detach().round().to(torch.int8))
    # A copy by default: the trained model is left as it was.
    assert isinstance(original[1], Doubler)
    for key, value in original.state_dict().items():
        assert torch.equal(value, state[key])


def test_convert_inplace_and_single_layer(doubler_registered):
    original = model()
    assert convert(original, inplace=True) is original
    assert isinstance(original[1], DeployedDoubler)
    layer = Doubler().eval()
    assert isinstance(convert(layer), DeployedDoubler)


def test_convert_refuses_training_mode(doubler_registered):
    trained = model().train()
    with pytest.raises(ValueError, match="'model' is in training mode.*eval"):
        convert(trained)
    trained.eval()
    trained[2][1].train()  # a single layer left in training mode
    with pytest.raises(ValueError, match='2.1'):
        convert(trained)


def test_quantized_layer_without_deployed_form_is_named(monkeypatch):
    gcn = quantize_model(GCN(4, 8, num_layers=2), QAT(bits=8)).eval()
    monkeypatch.delitem(DEPLOYED_LAYERS, QuantGCNConv)
    with pytest.raises(TypeError, match="'convs.0' \\(QuantGCNConv\\).*"
                       "BinLinear.*QuantGINConv"):
        convert(gcn)


def test_registry_checks_its_arguments():
    with pytest.raises(TypeError, match="'deployed_cls'"):
        register_deployed_layer(Doubler, nn.Linear)
    with pytest.raises(TypeError, match="'twin_cls'"):
        register_deployed_layer('Doubler', DeployedDoubler)
    with pytest.raises(TypeError, match="'model'"):
        convert({'weight': torch.zeros(1)})


def test_deployable_layers_lists_the_binary_and_integer_twins():
    names = deployable_layers()
    for name in ('BinLinear', 'BinEdgeConv', 'XorEdgeConv',
                 'DynamicBinEdgeConv', 'DynamicXorEdgeConv', 'QuantLinear',
                 'QuantGCNConv', 'QuantGINConv', 'QuantSAGEConv',
                 'QuantGATConv'):
        assert name in names
    assert names == sorted(names)


def test_deployed_layers_stay_in_eval_mode(doubler_registered):
    deployed = convert(model()).train()
    assert deployed.training and deployed[0].training
    assert not deployed[1].training and not deployed[2][1].training


def test_deployed_layers_ignore_reset_parameters():
    twin = BinLinear(8, 4).eval()
    deployed = convert(twin)
    before = {k: v.clone() for k, v in deployed.state_dict().items()}
    deployed.reset_parameters()
    for key, value in deployed.state_dict().items():
        assert torch.equal(value, before[key])


# nbytes ######################################################################


def test_nbytes_counts_parameters_and_buffers_once():
    layer = nn.BatchNorm1d(10)  # 2 x 10 params, 2 x 10 buffers, one int64
    assert nbytes(layer) == 4 * 40 + 8
    shared = nn.Linear(3, 3)
    both = nn.Sequential(shared, shared)
    assert nbytes(both) == nbytes(shared) == 4 * 12


def test_nbytes_of_deployed_binary_weight_is_one_bit_each():
    twin = BinLinear(64, 32, bias=False, batch_norm=False,
                     activation=None).eval()
    deployed = convert(twin)
    assert isinstance(deployed, DeployedBinLinear)
    assert deployed.weight_packed.dtype == torch.uint8
    # 64 x 32 weight bits, plus the float rescaling Gamma (32 values).
    assert nbytes(deployed) == 64 * 32 // 8 + 4 * 32
    assert nbytes(twin) == 4 * 64 * 32 + 4 * 32


def test_nbytes_refuses_lazy_and_non_modules():
    from torch_geometric.nn import Linear
    with pytest.raises(ValueError, match='lazy'):
        nbytes(Linear(-1, 4))
    with pytest.raises(TypeError, match="'model'"):
        nbytes(torch.zeros(3))


def test_convert_copies_a_model_holding_a_cached_sparse_adjacency():
    from torch_geometric.utils import to_torch_csr_tensor
    torch.manual_seed(0)
    x, edge_index = torch.randn(30, 4), torch.randint(0, 30, (2, 90))
    adj_t = to_torch_csr_tensor(edge_index.flip(0), size=(30, 30))
    model = quantize_model(GCN(4, 8, num_layers=2, cached=True), QAT(bits=8))
    model(x, adj_t)  # caches the normalized torch.sparse adjacency
    model.eval()
    expected = model(x, adj_t)
    deployed = convert(model)  # a copy: the cache is shared, not copied
    assert torch.equal(deployed(x, adj_t).argmax(-1), expected.argmax(-1))
    assert model.training is False and deployed is not model


def test_deployed_model_runs_on_inference_mode_tensors():
    torch.manual_seed(0)
    x, edge_index = torch.randn(30, 4), torch.randint(0, 30, (2, 90))
    model = quantize_model(GCN(4, 8, num_layers=2), QAT(bits=8))
    model(x, edge_index)
    deployed = convert(model.eval())
    expected = deployed(x, edge_index)
    with torch.inference_mode():  # such tensors keep no version counter
        x_inf, edge_inf = x.clone(), edge_index.clone()
        assert torch.equal(deployed(x_inf, edge_inf), expected)
        assert torch.equal(deployed(x_inf, edge_inf), expected)
