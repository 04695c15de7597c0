import pytest
import torch

from pyg_qgnn.datasets import contextual_sbm, load_planetoid
from pyg_qgnn.datasets.planetoid import canonical_planetoid_name
from tests.conftest import SHARED_DATA as SHARED
from tests.conftest import has_shared

needs_cora = pytest.mark.skipif(not has_shared('Cora'),
                                reason='shared Cora data absent')


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv('PYG_QGNN_CACHE', str(tmp_path / 'cache'))
    monkeypatch.delenv('PYG_QGNN_DATA', raising=False)


def test_canonical_names():
    assert canonical_planetoid_name('cora') == 'Cora'
    assert canonical_planetoid_name('PUBMED') == 'PubMed'
    with pytest.raises(ValueError, match="'dataset'.*Cora"):
        canonical_planetoid_name('Reddit')


@needs_cora
def test_cora_from_shared_root_never_writes_there(tmp_path):
    before = sorted(p.name for p in (SHARED / 'Cora').iterdir())
    graph = load_planetoid('Cora', root=str(SHARED))
    data = graph.data
    assert (data.num_nodes, data.num_features, graph.num_classes) == \
        (2708, 1433, 7)
    assert data.edge_index.size(1) == 10556
    assert int(data.train_mask.sum()) == 140
    assert int(data.val_mask.sum()) == 500
    assert int(data.test_mask.sum()) == 1000
    assert 'Kipf' in graph.split
    assert sorted(p.name for p in (SHARED / 'Cora').iterdir()) == before
    assert (tmp_path / 'cache' / 'planetoid' / 'Cora' / 'processed').is_dir()


@needs_cora
def test_env_variable_is_used(monkeypatch):
    monkeypatch.setenv('PYG_QGNN_DATA', str(SHARED))
    assert load_planetoid('cora', allow_download=False).source == \
        str(SHARED / 'Cora' / 'raw')


def test_root_without_raw_files_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="'root'"):
        load_planetoid('Cora', root=str(tmp_path))


def test_offline_fallback_is_synthetic_and_announced(monkeypatch):
    monkeypatch.setattr('pyg_qgnn.datasets.locate.shared_data_candidates',
                        lambda: [])
    messages = []
    graph = load_planetoid('CiteSeer', allow_download=False, log=messages.append)
    assert 'SYNTHETIC' in messages[-1]
    assert graph.source == 'synthetic contextual SBM'
    assert graph.data.num_features == 3703 and graph.num_classes == 6
    with pytest.raises(FileNotFoundError):
        load_planetoid('CiteSeer', allow_download=False, allow_synthetic=False)


def test_contextual_sbm_is_homophilous_and_split_like_planetoid():
    data = contextual_sbm(num_nodes=1400, num_classes=4, num_features=32,
                          avg_degree=6, homophily=0.9, num_val=200,
                          num_test=400, seed=1)
    row, col = data.edge_index
    same = (data.y[row] == data.y[col]).float().mean()
    assert 0.8 < float(same) <= 1.0
    assert data.edge_index.size(1) / data.num_nodes == pytest.approx(6, rel=0.2)
    assert torch.bincount(data.y[data.train_mask]).tolist() == [20] * 4
    masks = data.train_mask.int() + data.val_mask.int() + data.test_mask.int()
    assert int(masks.max()) == 1  # disjoint
    assert torch.equal(contextual_sbm(seed=3).x, contextual_sbm(seed=3).x)
    with pytest.raises(ValueError, match="'num_nodes'"):
        contextual_sbm(num_nodes=100)
