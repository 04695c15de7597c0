import pytest
import torch
from torch_geometric.nn.models import LightGCN
from torch_geometric.utils import to_torch_csr_tensor

from pyg_qgnn import IntegerQuantizer
from pyg_qgnn.nn.models import QuantLightGCN
from pyg_qgnn.nn.models.gnaq import neighbour_mean
from pyg_qgnn.quantizers import NodeAwareQuantizer
from tests.nn.conv.test_quant_lg_conv import dense_lg_adjacency


# A user-item graph: users 0, 1; items 2, 3, 4; both directions.
PAIRS = [(0, 2), (0, 3), (1, 3), (1, 4)]
EDGE_INDEX = torch.tensor(PAIRS + [(i, u) for u, i in PAIRS]).t()


def float_model(dim=6, layers=2, seed=0):
    torch.manual_seed(seed)
    model = LightGCN(5, dim, layers)
    torch.nn.init.normal_(model.embedding.weight, std=0.1)
    return model


def test_without_quantizer_equals_lightgcn():
    model = float_model()
    twin = QuantLightGCN.from_float(model)
    assert set(model.state_dict()) == set(twin.state_dict())
    out = twin.get_embedding(EDGE_INDEX)
    ref = model.get_embedding(EDGE_INDEX)
    assert torch.allclose(out, ref, atol=1e-6)
    out.pow(2).sum().backward()
    ref.pow(2).sum().backward()
    assert torch.allclose(twin.embedding.weight.grad,
                          model.embedding.weight.grad, atol=1e-6)


@pytest.mark.parametrize('append_levels', [False, True])
def test_gnaq_embedding_equals_eq_13(append_levels):
    model = float_model()
    twin = QuantLightGCN.from_float(model, NodeAwareQuantizer(
        2, append_levels=append_levels))
    out = twin.get_embedding(EDGE_INDEX)
    weight = torch.randn_like(out)
    (out * weight).sum().backward()

    quantizer = twin.embedding_quantizer
    levels = quantizer.levels.detach().to(torch.float8_e4m3fn).float()
    levels.requires_grad_()
    h = levels.gather(1, quantizer.codes.long())
    if append_levels:
        h = torch.cat([h, levels], dim=1)
    adj = dense_lg_adjacency(EDGE_INDEX, 5)
    layers = [h, adj @ h, adj @ adj @ h]
    ref = sum(layers) / 3  # Eq. 13: the mean over layers 0..L
    (ref * weight).sum().backward()
    assert out.shape == (5, 6 + 4 * append_levels)
    assert torch.allclose(out, ref, atol=1e-6)
    assert torch.allclose(quantizer.levels.grad, levels.grad, atol=1e-6)


def test_neighbour_mean_by_hand():
    x = torch.tensor([[0.0, 0.0], [2.0, 4.0], [4.0, 8.0]])
    edge_index = torch.tensor([[1, 2, 0], [0, 0, 1]])  # 1->0, 2->0, 0->1
    expected = [[3.0, 6.0], [0.0, 0.0], [4.0, 8.0]]  # node 2: no neighbour
    assert neighbour_mean(x, edge_index).tolist() == expected
    adj_t = to_torch_csr_tensor(edge_index.flip(0), torch.rand(3),
                                size=(3, 3))
    assert neighbour_mean(x, adj_t).tolist() == expected  # weights ignored
    with pytest.raises(TypeError, match="'adj'"):
        neighbour_mean(x, torch.rand(3, 3))


@pytest.mark.parametrize('relation_aware,relation_weight',
                         [(True, 1.0), (True, 0.5), (False, 0.25)])
def test_after_step_reassigns_codes(relation_aware, relation_weight):
    model = float_model(dim=4)
    with torch.no_grad():
        model.embedding.weight.copy_(torch.tensor([
            [0.0, 1.0, 2.0, 4.0],     # user 0
            [4.0, 2.0, 1.0, 0.0],     # user 1
            [0.0, 0.0, 4.0, 4.0],     # item 2
            [4.0, 0.0, 4.0, 0.0],     # item 3
            [4.0, 4.0, 0.0, 0.0]]))   # item 4
    twin = QuantLightGCN.from_float(model, NodeAwareQuantizer(
        2, relation_aware=relation_aware, relation_weight=relation_weight))
    quantizer = twin.embedding_quantizer
    # Every row spans [0, 4]: levels 0.5, 1.5, 2.5, 3.5, boundaries 1, 2, 3.
    assert quantizer.codes[0].tolist() == [0, 1, 2, 3]
    twin.after_step(EDGE_INDEX)
    if relation_aware and relation_weight == 1.0:
        # Eq. 14: user 0 takes the mean of items 2 and 3, [2, 0, 4, 2];
        # item 3 the mean of users 0 and 1, [2, 1.5, 1.5, 2].
        assert quantizer.codes[0].tolist() == [2, 0, 3, 2]
        assert quantizer.codes[3].tolist() == [2, 1, 1, 2]
    elif relation_aware:
        # Half own, half the means: [1, 0.5, 3, 3] and [3, 0.75, 2.75, 1].
        assert quantizer.codes[0].tolist() == [1, 0, 3, 3]
        assert quantizer.codes[3].tolist() == [3, 0, 2, 1]
    else:  # each node's own encoding: the codes it had
        assert quantizer.codes[0].tolist() == [0, 1, 2, 3]
        assert quantizer.codes[3].tolist() == [3, 0, 3, 0]


def test_lsq_baseline_trains_its_steps():
    twin = QuantLightGCN.from_float(
        float_model(), IntegerQuantizer(2, granularity='node', grad='lsq'))
    out = twin.get_embedding(EDGE_INDEX)
    out.pow(2).sum().backward()
    assert twin.embedding_quantizer.scale.grad.shape == (5, )
    assert twin.embedding.weight.grad is not None
    twin.after_step(EDGE_INDEX)  # nothing to do for it


def test_permutation_equivariance():
    model = float_model()
    perm = torch.tensor([1, 0, 4, 2, 3])
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(5)
    permuted = float_model()
    with torch.no_grad():
        permuted.embedding.weight.copy_(model.embedding.weight[perm])
    out = QuantLightGCN.from_float(model, NodeAwareQuantizer(2))
    out = out.get_embedding(EDGE_INDEX)
    other = QuantLightGCN.from_float(permuted, NodeAwareQuantizer(2))
    other = other.get_embedding(inverse[EDGE_INDEX])
    assert torch.allclose(other, out[perm], atol=1e-6)


def test_repr_and_bad_quantizer():
    twin = QuantLightGCN.from_float(float_model(), NodeAwareQuantizer(2))
    assert 'bits=2' in repr(twin) and 'QuantLightGCN(5, 6' in repr(twin)
    with pytest.raises(TypeError, match="'embedding_quantizer'"):
        QuantLightGCN(5, 6, 2, embedding_quantizer='gnaq')
    with pytest.raises(TypeError, match="'model' must be a LightGCN"):
        QuantLightGCN.from_float(torch.nn.Linear(2, 2))
