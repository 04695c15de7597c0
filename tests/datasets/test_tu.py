import pytest
import torch

from pyg_qgnn.datasets import load_tudataset, synthetic_graph_classes
from tests.conftest import SHARED_DATA as SHARED
from tests.conftest import has_shared


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv('PYG_QGNN_CACHE', str(tmp_path / 'cache'))
    monkeypatch.delenv('PYG_QGNN_DATA', raising=False)


@pytest.mark.skipif(not has_shared('PROTEINS'),
                    reason='shared PROTEINS data absent')
def test_proteins_from_shared_root_never_writes_there(tmp_path):
    before = sorted(p.name for p in (SHARED / 'PROTEINS').iterdir())
    loaded = load_tudataset('PROTEINS', root=str(SHARED))
    dataset = loaded.dataset
    assert len(dataset) == 1113 and dataset.num_classes == 2
    assert dataset.num_features == 3  # one-hot secondary-structure type
    labels = torch.cat([dataset[i].y for i in range(len(dataset))])
    assert int((labels == 0).sum()) == 663
    assert loaded.kind == 'real'
    assert sorted(p.name for p in (SHARED / 'PROTEINS').iterdir()) == before
    assert (tmp_path / 'cache' / 'tu' / 'PROTEINS' / 'processed').is_dir()


def test_root_without_raw_files_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="'root'.*PROTEINS/raw"):
        load_tudataset('PROTEINS', root=str(tmp_path))


def test_offline_fallback_is_synthetic_and_announced(monkeypatch):
    monkeypatch.setattr('pyg_qgnn.datasets.locate.shared_data_candidates',
                        lambda: [])
    messages = []
    loaded = load_tudataset('PROTEINS', allow_download=False,
                            log=messages.append)
    assert 'SYNTHETIC' in messages[-1] and loaded.kind == 'synthetic'
    with pytest.raises(FileNotFoundError, match='PROTEINS'):
        load_tudataset('PROTEINS', allow_download=False,
                       allow_synthetic=False)


def test_synthetic_classes_are_balanced_and_indexable():
    dataset = synthetic_graph_classes(num_graphs=20, seed=1)
    assert len(dataset) == 20 and dataset.num_classes == 2
    subset = dataset[torch.tensor([0, 3, 5])]
    assert len(subset) == 3 and subset[1].x.size(1) == 3
    again = synthetic_graph_classes(num_graphs=20, seed=1)
    assert torch.equal(dataset[7].edge_index, again[7].edge_index)
