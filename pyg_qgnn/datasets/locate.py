r"""Where datasets are found, and where their processed copies go.

Lookup order for a dataset :obj:`<Name>`: an explicit :obj:`root`, then
:obj:`$PYG_QGNN_DATA`, then the project's :obj:`../shared/data`, each used
only if it holds :obj:`<root>/<Name>/raw/`. Raw files are copied into a
cache (:obj:`$PYG_QGNN_CACHE`, default :obj:`~/.cache/pyg_qgnn`) before PyG
processes them, so no :obj:`processed/` folder is ever written into a data
folder that may be shared or read-only.
"""
import os
import shutil
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional


def cache_root() -> Path:
    return Path(os.environ.get('PYG_QGNN_CACHE',
                               Path.home() / '.cache' / 'pyg_qgnn'))


def shared_data_candidates() -> List[Path]:
    r"""The :obj:`../shared/data` folders beside the working directory and
    beside this source checkout."""
    repo = Path(__file__).resolve().parents[2]
    return [Path.cwd().parent / 'shared' / 'data',
            repo.parent / 'shared' / 'data']


def has_raw(root: Path, name: str) -> bool:
    raw = root / name / 'raw'
    return raw.is_dir() and any(raw.iterdir())


def find_raw(name: str, root: Optional[str] = None,
             what: str = 'raw files') -> Optional[Path]:
    r"""The first folder of the lookup order holding :obj:`<name>/raw/`, or
    :obj:`None`. An explicit :obj:`root` without it is an error."""
    if root is not None:
        if not has_raw(Path(root), name):
            raise FileNotFoundError(f"'root' {root!r} holds no {name}/raw/ "
                                    f"folder with {what}")
        return Path(root)
    env = os.environ.get('PYG_QGNN_DATA')
    for candidate in ([Path(env)] if env else []) + shared_data_candidates():
        if has_raw(candidate, name):
            return candidate
    return None


def cached_copy(root: Path, name: str, collection: str) -> Path:
    r"""Copies :obj:`root/<name>/raw/` to the cache and returns the cache
    root of :obj:`collection` (e.g. :obj:`"planetoid"`) for PyG to
    process."""
    cached = cache_root() / collection
    raw = cached / name / 'raw'
    raw.mkdir(parents=True, exist_ok=True)
    for src in (root / name / 'raw').iterdir():
        dst = raw / src.name
        if not dst.exists() or dst.stat().st_size != src.stat().st_size:
            shutil.copyfile(src, dst)
    return cached


@contextmanager
def download_timeout(seconds: float = 15.0) -> Iterator[None]:
    r"""Offline machines should fail a download fast."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)
