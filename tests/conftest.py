import os
from pathlib import Path

import pytest

#: The project's real datasets (never copied into the repo).
SHARED_DATA = Path(os.environ.get(
    'PYG_QGNN_DATA', Path(__file__).resolve().parents[2] / 'shared' / 'data'))


def has_shared(name: str) -> bool:
    return (SHARED_DATA / name).is_dir()


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    # Processed datasets go to a per-session cache, never into shared/.
    monkeypatch.setenv('PYG_QGNN_CACHE',
                       str(tmp_path_factory.getbasetemp() / 'cache'))
