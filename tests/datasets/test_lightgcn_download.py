import shutil
from pathlib import Path

import pytest

from pyg_qgnn.datasets import lightgcn_download
from pyg_qgnn.datasets.lightgcn_download import (
    URL,
    download_folder,
    download_lightgcn,
)
from pyg_qgnn.datasets.recsys import load_recsys

TRAIN = '0 0 1 2\n1 1 3\n2 0 2 3\n'
TEST = '0 3\n1 0\n2 1\n'


@pytest.fixture
def no_local_data(monkeypatch, tmp_path):
    r"""No $PYG_QGNN_DATA, no shared data, an empty cache."""
    monkeypatch.setattr('pyg_qgnn.datasets.recsys.shared_data_candidates',
                        lambda: [])
    monkeypatch.delenv('PYG_QGNN_DATA', raising=False)
    monkeypatch.setenv('PYG_QGNN_CACHE', str(tmp_path / 'cache'))


def serve(monkeypatch, tmp_path, files, fail_on=()):
    r"""download_url answered from a local folder holding :obj:`files`."""
    served = tmp_path / 'served'
    served.mkdir()
    for file, text in files.items():
        (served / file).write_text(text)
    requested = []

    def download_url(url, folder, log=True):
        requested.append(url)
        file = url.rsplit('/', 1)[1]
        if file in fail_on or not (served / file).exists():
            raise OSError(f'HTTP Error 404 for {url}')
        return shutil.copy(served / file, Path(folder) / file)

    monkeypatch.setattr(lightgcn_download, 'download_url', download_url)
    return requested


def test_gowalla_is_downloaded_once_and_loaded(no_local_data, monkeypatch,
                                               tmp_path):
    requested = serve(monkeypatch, tmp_path,
                      {'train.txt': TRAIN, 'test.txt': TEST})
    logged = []
    data = load_recsys('gowalla', log=logged.append)
    assert logged[0].startswith('[pyg_qgnn] downloading gowalla from ')
    assert requested[0] == URL.format(name='gowalla') + '/train.txt'
    assert not data.synthetic and data.source == str(download_folder(
        'gowalla'))
    assert (data.num_users, data.num_items) == (3, 4)
    assert data.test.size(1) == 3
    # The optional id lists were missing; the second load needs no network.
    requested.clear()
    assert load_recsys('gowalla', log=lambda m: None).num_items == 4
    assert requested == []


def test_interrupted_download_leaves_nothing(no_local_data, monkeypatch,
                                             tmp_path):
    serve(monkeypatch, tmp_path, {'train.txt': TRAIN, 'test.txt': TEST},
          fail_on=('test.txt', ))
    with pytest.raises(OSError, match='404'):
        download_lightgcn('gowalla', log=lambda m: None)
    assert not download_folder('gowalla').exists()
    assert list(download_folder('gowalla').parent.iterdir()) == []
    logged = []
    data = load_recsys('gowalla', log=logged.append)  # announced stand-in
    assert data.synthetic
    assert 'could not download gowalla (OSError' in logged[1]
    assert 'SYNTHETIC' in logged[2]


def test_only_known_names_and_no_explicit_root_download(no_local_data,
                                                        monkeypatch,
                                                        tmp_path):
    requested = serve(monkeypatch, tmp_path, {})
    assert download_lightgcn('my-shop') is None
    load_recsys('my-shop', log=lambda m: None)
    load_recsys('gowalla', allow_download=False, log=lambda m: None)
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="'root'"):
        load_recsys('gowalla', str(empty))
    assert requested == []
