import pytest
import torch

from pyg_qgnn import deploy
from pyg_qgnn.datasets.recsys import synthetic_interactions
from pyg_qgnn.deploy import DeployedGNAQ
from pyg_qgnn.metrics import top_k
from pyg_qgnn.nn.models import QuantLightGCN
from pyg_qgnn.quantizers import IntegerQuantizer, NodeAwareQuantizer
from pyg_qgnn.train.recsys import lightgcn, train_recommender


@pytest.fixture(scope='module', params=[False, True],
                ids=['embedding', 'appended-levels'])
def trained(request):
    r"""A GNAQ model fine-tuned for two epochs on a small synthetic set."""
    data = synthetic_interactions(num_users=60, num_items=80,
                                  items_per_user=8, num_clusters=4)
    torch.manual_seed(0)
    model = QuantLightGCN.from_float(
        lightgcn(data.num_users, data.num_items, 16, 2),
        NodeAwareQuantizer(2, append_levels=request.param))
    train_recommender(model, data, 2, lr=0.01, batch_size=64,
                      loss='bpr+lambda', num_negatives=4)
    return data, model.eval()


def deployed_of(data, model):
    deployed = deploy.convert(model)  # through the registry
    assert isinstance(deployed, DeployedGNAQ)
    deployed.attach_graph(data.train, data.num_users)
    return deployed


def test_embeddings_and_top_k_equal_the_fake_quant_model(trained):
    data, model = trained
    deployed = deployed_of(data, model)
    adj = data.adjacency()
    with torch.no_grad():
        out = model.get_embedding(adj)
    assert torch.equal(deployed.get_embedding(), out)
    assert torch.equal(deployed.get_embedding(adj), out)
    users = torch.arange(data.num_users)
    expected = top_k(out[:data.num_users], out[data.num_users:], 10, users,
                     data.train)
    assert torch.equal(deployed.recommend(users, 10), expected)
    seen = set(map(tuple, data.train.t().tolist()))
    for user, items in zip(users.tolist(), expected.tolist()):
        assert not any((user, item) in seen for item in items)


def test_stores_only_packed_codes_fp8_levels_and_the_graph(trained):
    data, model = trained
    deployed = deployed_of(data, model)
    buffers = {name: (b.dtype, tuple(b.shape))
               for name, b in deployed.named_buffers()}
    n = data.num_nodes
    assert buffers == {
        'codes': (torch.uint8, (n, 16 * 2 // 8)),
        'levels': (torch.float8_e4m3fn, (n, 4)),
        'alpha': (torch.float32, (3, )),
        'user_counts': (torch.int32, (data.num_users, )),
        'user_items': (torch.int32, (data.train.size(1), )),
    }
    assert list(deployed.parameters()) == []
    assert deployed.embedding_nbytes() == n * (4 + 4)
    assert deploy.nbytes(deployed) == (deployed.embedding_nbytes() +
                                       deployed.graph_nbytes() + 3 * 4)
    # d = 16 at 2 bits: 4 code bytes + 4 level bytes against 64 float bytes.
    assert n * 16 * 4 / deployed.embedding_nbytes() == 8.0
    assert 'float8_e4m3fn' in repr(deployed) and 'not stored' in repr(deployed)


def test_save_load_round_trip(trained, tmp_path):
    data, model = trained
    deployed = deployed_of(data, model)
    path = tmp_path / 'gnaq.safetensors'
    size = deployed.save(path)
    assert size == path.stat().st_size
    loaded = DeployedGNAQ.load(path)
    for name, buffer in deployed.named_buffers():
        assert torch.equal(getattr(loaded, name).view(torch.uint8),
                           buffer.view(torch.uint8))
    users = torch.arange(0, data.num_users, 3)
    assert torch.equal(loaded.recommend(users, 5), deployed.recommend(users,
                                                                      5))
    assert torch.equal(loaded.get_embedding(), deployed.get_embedding())


def test_bad_input_is_a_clear_error(trained, tmp_path):
    data, model = trained
    lsq = QuantLightGCN.from_float(
        lightgcn(data.num_users, data.num_items, 16, 2),
        IntegerQuantizer(2, granularity='node', grad='lsq'))
    with pytest.raises(TypeError, match='not a NodeAwareQuantizer'):
        DeployedGNAQ.from_trained(lsq.eval())
    deployed = DeployedGNAQ.from_trained(model)
    with pytest.raises(RuntimeError, match='attach_graph'):
        deployed.recommend(torch.tensor([0]))
    with pytest.raises(ValueError, match="'num_users'"):
        deployed.attach_graph(data.train, data.num_nodes)
    deployed.attach_graph(data.train, data.num_users)
    with pytest.raises(ValueError, match="'users' must be ids"):
        deployed.recommend(torch.tensor([data.num_users]))
    with pytest.raises(ValueError, match="'k' must be at most the number of "
                       "items"):
        deployed.recommend(torch.tensor([0]), k=data.num_items + 1)
    other = tmp_path / 'other.safetensors'
    deploy.save(lsq, other)
    with pytest.raises(ValueError, match='not written by DeployedGNAQ.save'):
        DeployedGNAQ.load(other)
    (tmp_path / 'junk').write_bytes(b'junk')
    with pytest.raises(ValueError, match='not a readable safetensors'):
        DeployedGNAQ.load(tmp_path / 'junk')
