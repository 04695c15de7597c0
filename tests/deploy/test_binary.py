"""Tests of the deployed binary layers (pyg_qgnn.deploy.binary): they equal
the fake-quantized twins in evaluation, follow the paper's equations, and
save and load bit-exactly."""
import dataclasses
import importlib
import pickle

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

from pyg_qgnn.deploy import (
    DeployedBinEdgeConv,
    DeployedBinLinear,
    DeployedDynamicBinEdgeConv,
    DeployedDynamicXorEdgeConv,
    DeployedXorEdgeConv,
    backend,
    convert,
    load,
    nbytes,
    save,
)
from pyg_qgnn.deploy import binary as binary_module
from pyg_qgnn.deploy import binary_ops
from pyg_qgnn.nn.conv.bin_edge_conv import BinEdgeConv
from pyg_qgnn.nn.conv.dynamic_bin_edge_conv import DynamicBinEdgeConv
from pyg_qgnn.nn.conv.dynamic_xor_edge_conv import DynamicXorEdgeConv
from pyg_qgnn.nn.conv.xor_edge_conv import XorEdgeConv
from pyg_qgnn.nn.dense.bin_linear import BinLinear
from pyg_qgnn.nn.models.dgcnn import DGCNN, BinaryDGCNN
from pyg_qgnn.quantizers import SignQuantizer, set_binarization_stage
from pyg_qgnn.quantizers.binary import clip_latent_weights_

# The module, not the function pyg_qgnn.deploy.knn that shadows it.
knn_module = importlib.import_module('pyg_qgnn.deploy.knn')


def trained(module, *inputs, steps=2, seed=0):
    r""":obj:`module` after a few SGD steps (non-trivial weights, running
    statistics and rescaling), in evaluation mode."""
    torch.manual_seed(seed)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    module.train()
    for _ in range(steps):
        optimizer.zero_grad()
        out = module(*inputs)
        (out * torch.randn_like(out)).sum().backward()
        optimizer.step()
        clip_latent_weights_(module)
    return module.eval()


def regular_graph(num_nodes, k, seed=0):
    gen = torch.Generator().manual_seed(seed)
    sources = torch.stack([torch.randperm(num_nodes, generator=gen)[:k]
                           for _ in range(num_nodes)])
    return torch.stack([sources.reshape(-1),
                        torch.arange(num_nodes).repeat_interleave(k)])


def clouds(sizes=(20, 13, 27), channels=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(sum(sizes), channels, generator=gen)
    batch = torch.arange(len(sizes)).repeat_interleave(torch.tensor(sizes))
    return x, batch


def assert_deployed_equals(twin, *inputs):
    deployed = convert(twin)
    expected = twin(*inputs)
    out = deployed(*inputs)
    assert not out.requires_grad
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    return deployed, out


def small_dgcnn(variant, seed=0):
    torch.manual_seed(seed)
    return BinaryDGCNN(variant, num_classes=4, k=5, conv_channels=(8, 16),
                       embed_channels=24, hidden_channels=(16, ))


# BinLinear ###################################################################


@pytest.mark.parametrize('kwargs', [
    dict(),
    dict(bias=False, activation='relu'),
    dict(batch_norm=False, activation=None),
    dict(input_quantizer=None),  # real inputs, binary weights
    dict(weight_quantizer=None),  # binary inputs, real weights
    dict(input_quantizer=SignQuantizer(balance='median')),
    dict(weight_quantizer=SignQuantizer(balance='mean'), in_channels=13),
])
def test_bin_linear_equals_twin(kwargs):
    kwargs = dict(dict(in_channels=16, out_channels=8), **kwargs)
    x = torch.randn(30, kwargs['in_channels'])
    twin = trained(BinLinear(**kwargs), x)
    deployed, _ = assert_deployed_equals(twin, torch.randn(25, x.size(1)))
    assert isinstance(deployed, DeployedBinLinear)
    binary = kwargs.get('weight_quantizer', 'sign') is not None
    assert (deployed.weight_packed is not None) == binary


@pytest.mark.parametrize('kwargs', [
    dict(),  # row blocks
    dict(input_quantizer=SignQuantizer(balance='mean')),  # one block
    dict(input_quantizer=None),
])
def test_bin_linear_in_row_blocks_equals_twin(monkeypatch, kwargs):
    monkeypatch.setattr(binary_module, 'ROW_BLOCK', 7)
    x = torch.randn(30, 16)
    twin = trained(BinLinear(16, 8, **kwargs), x)
    deployed = convert(twin)
    assert deployed.exact_by_rows() == (kwargs == {})
    x = torch.randn(4, 6, 16)  # 24 rows: 4 blocks
    assert torch.equal(deployed(x), twin(x))


def test_bin_linear_with_rank_one_rescaling_on_dense_input():
    x = torch.randn(5, 3, 12)
    twin = trained(BinLinear(12, 6, rescale_modes=(3, )), x)
    assert_deployed_equals(twin, torch.randn(4, 3, 12))


def test_bin_linear_follows_the_xnor_block_equation():
    twin = trained(BinLinear(16, 8), torch.randn(30, 16))
    x = torch.randn(20, 16)
    norm = twin.norm
    normalized = (x - norm.running_mean) / torch.sqrt(
        norm.running_var + norm.eps) * norm.weight + norm.bias
    dot = torch.sign(normalized + 0.0).where(normalized != 0, 1.0) @ \
        torch.where(twin.weight >= 0, 1.0, -1.0).t()
    expected = F.prelu(dot * twin.rescale.alpha + twin.bias,
                       twin.activation.weight)
    torch.testing.assert_close(convert(twin)(x), expected.detach(),
                               rtol=1e-5, atol=1e-5)


# Edge convolutions ###########################################################


@pytest.mark.parametrize('kwargs', [dict(), dict(input_quantizer=None),
                                    dict(aggr='mean', activation='relu')])
def test_bin_edge_conv_equals_twin(kwargs):
    edge_index = regular_graph(15, 4)
    x = torch.randn(15, 6)
    twin = trained(BinEdgeConv(6, 8, **kwargs), x, edge_index)
    deployed, _ = assert_deployed_equals(twin, torch.randn(15, 6), edge_index)
    assert isinstance(deployed, DeployedBinEdgeConv)


@pytest.mark.parametrize('norm', ['after', 'before'])
@pytest.mark.parametrize('kwargs', [
    dict(), dict(input_quantizer=None), dict(weight_quantizer=None),
    dict(bias=True, aggr='mean'), dict(in_channels=11),
])
def test_xor_edge_conv_equals_twin(norm, kwargs):
    kwargs = dict(dict(in_channels=16, out_channels=8, norm=norm), **kwargs)
    edge_index = regular_graph(20, 5)
    x = torch.randn(20, kwargs['in_channels'])
    twin = trained(XorEdgeConv(**kwargs), x, edge_index)
    deployed, _ = assert_deployed_equals(twin, torch.randn_like(x),
                                         edge_index)
    assert isinstance(deployed, DeployedXorEdgeConv)


def test_xor_edge_conv_bipartite_equals_twin():
    edge_index = torch.stack([torch.randint(12, (30, )),
                              torch.randint(7, (30, ))])
    x = (torch.randn(12, 8), torch.randn(7, 8))
    twin = trained(XorEdgeConv(8, 4), x, edge_index)
    assert_deployed_equals(twin, x, edge_index)


@pytest.mark.parametrize('norm', ['after', 'before'])
def test_xor_edge_conv_follows_eq_17_to_20(norm):
    edge_index = regular_graph(12, 3)
    twin = trained(XorEdgeConv(8, 5, norm=norm), torch.randn(12, 8),
                   edge_index)
    x = torch.randn(12, 8)
    signs = torch.where(x >= 0, 1.0, -1.0)
    j, i = edge_index
    weight = torch.where(twin.nn.weight >= 0, 1.0, -1.0)
    edges = torch.cat([signs[i], -signs[j] * signs[i]], dim=-1)  # Eq. 17
    messages = F.prelu(edges @ weight.t() * twin.nn.rescale.alpha,
                       twin.nn.activation.weight)
    bn = twin.norm

    def batch_norm(t):
        return (t - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) \
            * bn.weight + bn.bias

    if norm == 'before':  # Eq. 20
        messages = batch_norm(messages)
    pooled = torch.stack([messages[i == node].max(0).values
                          for node in range(12)])
    if norm == 'after':  # Eq. 19
        pooled = batch_norm(pooled)
    expected = torch.where(pooled >= 0, 1.0, -1.0).detach()
    assert torch.equal(convert(twin)(x, edge_index), expected)


@pytest.mark.parametrize('conv', [
    lambda: BinEdgeConv(6, 5),
    lambda: XorEdgeConv(6, 5, norm='after'),
    lambda: XorEdgeConv(6, 5, norm='before'),
])
def test_isolated_nodes_and_negative_scales_equal_twin(conv):
    # Nodes 0-3 receive no edge (PyG's max gives them 0 before any later
    # step); negative rescaling and BN weights flip the max into a min.
    edge_index = regular_graph(16, 4)
    edge_index = edge_index[:, edge_index[1] >= 4]
    twin = trained(conv(), torch.randn(16, 6), edge_index)
    with torch.no_grad():
        twin.nn.activation.weight.fill_(0.2)
        twin.nn.rescale.alpha[::2] *= -1
        if isinstance(twin, XorEdgeConv):
            twin.norm.weight[1::2] *= -1
    deployed = convert(twin)
    assert deployed.nn.monotone_directions() is not None
    assert_deployed_equals(twin, torch.randn(16, 6), edge_index)


@pytest.mark.parametrize('cls', [BinEdgeConv, XorEdgeConv])
def test_negative_prelu_slope_takes_the_per_edge_path(cls):
    edge_index = regular_graph(16, 4)
    twin = trained(cls(6, 5), torch.randn(16, 6), edge_index)
    with torch.no_grad():
        twin.nn.activation.weight.fill_(-0.3)  # not monotone any more
    deployed, _ = assert_deployed_equals(twin, torch.randn(16, 6),
                                         edge_index)
    assert deployed.nn.monotone_directions() is None


@pytest.mark.parametrize('cls', [BinEdgeConv, XorEdgeConv])
def test_permutation_equivariance(cls):
    edge_index = regular_graph(16, 4)
    twin = trained(cls(6, 5), torch.randn(16, 6), edge_index)
    deployed = convert(twin)
    x = torch.randn(16, 6)
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(1))
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(16)
    out = deployed(x, edge_index)
    permuted = deployed(x[perm], inverse[edge_index])
    torch.testing.assert_close(permuted, out[perm])


@pytest.mark.parametrize('cls,kwargs', [
    (DynamicBinEdgeConv, dict()),
    (DynamicBinEdgeConv, dict(knn='xor')),
    (DynamicXorEdgeConv, dict(norm='after')),
    (DynamicXorEdgeConv, dict(norm='before', knn='xor')),
    (DynamicXorEdgeConv, dict(input_quantizer=None)),
])
@pytest.mark.parametrize('sizes', [(20, 13, 27), (20, 4, 27)])
def test_dynamic_layers_equal_twins(cls, kwargs, sizes):
    x, batch = clouds(sizes, channels=16)
    twin = trained(cls(16, 8, k=6, **kwargs), x, batch)
    deployed, _ = assert_deployed_equals(twin, torch.randn_like(x), batch)
    assert isinstance(deployed, (DeployedDynamicBinEdgeConv,
                                 DeployedDynamicXorEdgeConv))


# Models ######################################################################


@pytest.mark.parametrize('variant', ['rf', 'bf1', 'bf2'])
def test_dgcnn_logits_equal_twin(variant):
    x, batch = clouds()
    model = trained(small_dgcnn(variant), x, batch)
    deployed, logits = assert_deployed_equals(model, *clouds(seed=1))
    assert logits.shape == (3, 4)
    assert nbytes(deployed) < nbytes(model) / 2


@pytest.mark.parametrize('stage', [0, 2])
def test_earlier_stages_deploy_too(stage):
    x, batch = clouds()
    model = set_binarization_stage(small_dgcnn('bf1'), stage)
    assert_deployed_equals(trained(model, x, batch), x, batch)


def test_relaxed_stage_is_refused():
    model = set_binarization_stage(small_dgcnn('rf'), 1).eval()
    with pytest.raises(ValueError, match="relaxed.*set_binarization_stage"):
        convert(model)


@pytest.mark.parametrize('impl', ['torch', 'popcount'])
def test_reference_paths_give_the_same_logits(monkeypatch, impl):
    x, batch = clouds()
    model = trained(small_dgcnn('bf2'), x, batch)
    deployed = convert(model)
    fast = deployed(x, batch)
    slow = dataclasses.replace(backend(), hamming_knn='torch',
                               binary_matmul=impl)
    for module in (binary_ops, knn_module, binary_module):
        monkeypatch.setattr(module, 'backend', lambda: slow)
    assert torch.equal(deployed(x, batch), fast)


def test_full_size_model_is_at_least_15x_smaller_than_float():
    float_bytes = nbytes(DGCNN())
    for variant in ('rf', 'bf1', 'bf2'):
        deployed = convert(BinaryDGCNN(variant).eval())
        assert float_bytes / nbytes(deployed) >= 15


# Save and load ###############################################################


@pytest.mark.parametrize('variant', ['rf', 'bf1'])
def test_save_load_round_trip_is_bit_exact(tmp_path, monkeypatch, variant):
    x, batch = clouds()
    deployed = convert(trained(small_dgcnn(variant), x, batch))
    path = tmp_path / 'deployed.safetensors'
    size = save(deployed, path)
    assert size == path.stat().st_size
    with safe_open(str(path), framework='pt') as f:
        packed = [k for k in f.keys() if k.endswith('weight_packed')]
        assert packed and all(f.get_tensor(k).dtype == torch.uint8
                              for k in packed)

    def forbidden(*args, **kwargs):
        raise AssertionError('pickle used while loading')

    monkeypatch.setattr(pickle, 'loads', forbidden)
    monkeypatch.setattr(torch, 'load', forbidden)
    # Any model of the same architecture, converted, is the skeleton.
    fresh = convert(small_dgcnn(variant, seed=1).eval())
    assert load(path, fresh) is fresh
    for key, value in deployed.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    assert torch.equal(fresh(x, batch), deployed(x, batch))


def test_deployed_checkpoint_into_undeployed_model_fails(tmp_path):
    path = tmp_path / 'deployed.safetensors'
    save(convert(small_dgcnn('rf').eval()), path)
    with pytest.raises(ValueError, match='checkpoint'):
        load(path, small_dgcnn('rf').eval())


def test_nan_features_are_rejected():
    x, batch = clouds()
    deployed = convert(small_dgcnn('bf1').eval())
    x[3, 1] = float('nan')
    with pytest.raises(ValueError, match='NaN'):
        deployed(x, batch)
