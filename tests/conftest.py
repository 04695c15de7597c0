import os
from pathlib import Path

import pytest

#: The project's real datasets (never copied into the repo).
SHARED_DATA = Path(os.environ.get(
    'PYG_QGNN_DATA', Path(__file__).resolve().parents[2] / 'shared' / 'data'))


def has_shared(name: str) -> bool:
    return (SHARED_DATA / name).is_dir()


@pytest.fixture(scope='module')
def one_thread():
    r"""One PyTorch thread for a module of tests on tiny tensors: on a busy
    machine, waking threads costs far more than they save (25x slower
    deployment tests with two). Use it with
    :obj:`pytest.mark.usefixtures('one_thread')`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    # Processed datasets go to a per-session cache, never into shared/.
    monkeypatch.setenv('PYG_QGNN_CACHE',
                       str(tmp_path_factory.getbasetemp() / 'cache'))
