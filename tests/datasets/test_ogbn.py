import pytest
import torch

from pyg_qgnn.datasets import ogbn
from pyg_qgnn.datasets.ogb_synthetic import write_synthetic_ogb
from pyg_qgnn.datasets.ogbn import load_ogbn


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv('PYG_QGNN_CACHE', str(tmp_path / 'cache'))
    monkeypatch.delenv('PYG_QGNN_DATA', raising=False)
    monkeypatch.setattr('pyg_qgnn.datasets.locate.shared_data_candidates',
                        lambda: [])


def test_offline_fallback_is_synthetic_announced_and_cached(monkeypatch):
    messages = []
    loaded = load_ogbn(synthetic_nodes=200, log=messages.append)
    assert loaded.synthetic and loaded.kind == 'synthetic'
    assert 'SYNTHETIC' in messages[-1] and 'ogbn-products' in messages[-1]
    assert 'SYNTHETIC' in loaded.describe()
    assert loaded.data.num_nodes == 200 and loaded.num_classes == 47
    assert loaded.data.y.dim() == 1
    # The second call reads the cached graph instead of writing it again.
    monkeypatch.setattr(ogbn, 'write_synthetic_ogb',
                        lambda *a, **k: pytest.fail('rewritten'))
    again = load_ogbn(synthetic_nodes=200, log=messages.append)
    assert torch.equal(again.data.x, loaded.data.x)


def test_a_downloaded_copy_is_read_in_place_never_written(tmp_path):
    data_root = tmp_path / 'data'
    folder = write_synthetic_ogb(data_root, num_nodes=150, num_features=6,
                                 num_classes=3, split=(0.2, 0.2))
    (folder / 'RELEASE_v1.txt').unlink()  # linked_copy supplies its own
    before = sorted(str(p) for p in folder.rglob('*'))
    loaded = load_ogbn(root=str(data_root), log=pytest.fail)
    assert not loaded.synthetic and loaded.kind == 'real'
    assert loaded.source == str(folder)
    assert loaded.data.num_nodes == 150
    assert 'official sales_ranking split' in loaded.split
    assert sorted(str(p) for p in folder.rglob('*')) == before
    assert list((tmp_path / 'cache' / 'ogb').glob('*/ogbn_products/processed'))


def test_env_variable_is_used(tmp_path, monkeypatch):
    write_synthetic_ogb(tmp_path / 'env', num_nodes=120, num_features=4,
                        num_classes=2, split=(0.2, 0.2))
    monkeypatch.setenv('PYG_QGNN_DATA', str(tmp_path / 'env'))
    assert load_ogbn(allow_synthetic=False).source == \
        str(tmp_path / 'env' / 'ogbn_products')


def test_root_without_raw_files_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="'root'.*ogbn_products/raw"):
        load_ogbn(root=str(tmp_path))


def test_copy_without_split_folder_is_an_error(tmp_path):
    folder = write_synthetic_ogb(tmp_path, num_nodes=50, num_features=2,
                                 num_classes=2, split=(0.2, 0.2))
    import shutil
    shutil.rmtree(folder / 'split')
    with pytest.raises(FileNotFoundError, match='split/'):
        load_ogbn(root=str(tmp_path))


def test_no_copy_and_no_synthetic_is_an_error():
    with pytest.raises(FileNotFoundError, match='PYG_QGNN_DATA'):
        load_ogbn(allow_synthetic=False)
