r"""Planetoid citation graphs (Cora, CiteSeer, PubMed) from wherever they are.

Lookup order: an explicit :obj:`root`, then :obj:`$PYG_QGNN_DATA`, then the
project's :obj:`../shared/data`, each used only if it holds
:obj:`<root>/<Name>/raw/`; then PyG's own download; and, offline, a clearly
announced synthetic stand-in (:func:`contextual_sbm`). Raw files are copied
into a cache (:obj:`$PYG_QGNN_CACHE`, default :obj:`~/.cache/pyg_qgnn`)
before PyG processes them, so no :obj:`processed/` folder is ever written
into a data folder that may be shared or read-only.
"""
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

from torch_geometric.data import Data
from torch_geometric.datasets import Planetoid

from pyg_qgnn.datasets.synthetic import contextual_sbm

PLANETOID_NAMES = {'cora': 'Cora', 'citeseer': 'CiteSeer', 'pubmed': 'PubMed'}
_SYNTHETIC_SHAPE = {  # (nodes, classes, features) of the stand-ins
    'Cora': (2708, 7, 1433),
    'CiteSeer': (3327, 6, 3703),
    'PubMed': (19717, 3, 500),
}


@dataclass
class LoadedGraph:
    data: Data
    num_classes: int
    source: str  # where it came from, for the report
    split: str  # the split the masks follow


def cache_root() -> Path:
    return Path(os.environ.get('PYG_QGNN_CACHE',
                               Path.home() / '.cache' / 'pyg_qgnn'))


def shared_data_candidates() -> List[Path]:
    r"""The :obj:`../shared/data` folders beside the working directory and
    beside this source checkout."""
    repo = Path(__file__).resolve().parents[2]
    return [Path.cwd().parent / 'shared' / 'data',
            repo.parent / 'shared' / 'data']


def canonical_planetoid_name(name: str) -> str:
    try:
        return PLANETOID_NAMES[name.lower()]
    except KeyError:
        raise ValueError(f"'dataset' must be a Planetoid name, one of "
                         f"{sorted(PLANETOID_NAMES.values())} (got {name!r})"
                         ) from None


def _has_raw(root: Path, name: str) -> bool:
    raw = root / name / 'raw'
    return raw.is_dir() and any(raw.iterdir())


def load_planetoid(name: str = 'Cora', root: Optional[str] = None,
                   allow_download: bool = True, allow_synthetic: bool = True,
                   log: Callable[[str], None] = print) -> LoadedGraph:
    r"""Loads a Planetoid graph with the public (Kipf & Welling) split.

    Args:
        name (str, optional): :obj:`"Cora"`, :obj:`"CiteSeer"` or
            :obj:`"PubMed"` (any case). (default: :obj:`"Cora"`)
        root (str, optional): A folder holding :obj:`<Name>/raw/`; if given
            and it does not, an error is raised. (default: :obj:`None`)
        allow_download (bool, optional): Try PyG's download when no local
            copy exists. (default: :obj:`True`)
        allow_synthetic (bool, optional): Fall back to a synthetic contextual
            SBM of the same size when nothing else works. (default: :obj:`True`)
        log (callable, optional): Where announcements go. (default: :obj:`print`)
    """
    name = canonical_planetoid_name(name)
    if root is not None:
        if not _has_raw(Path(root), name):
            raise FileNotFoundError(f"'root' {root!r} holds no {name}/raw/ "
                                    f"folder with Planetoid raw files")
        candidates = [Path(root)]
    else:
        env = os.environ.get('PYG_QGNN_DATA')
        candidates = ([Path(env)] if env else []) + shared_data_candidates()
    for candidate in candidates:
        if _has_raw(candidate, name):
            return LoadedGraph(*_from_raw(candidate, name),
                               source=str(candidate / name / 'raw'),
                               split='public Planetoid split (Kipf & Welling)')
    if allow_download:
        try:
            dataset = _download(name)
            return LoadedGraph(dataset[0], dataset.num_classes,
                               source='PyG download',
                               split='public Planetoid split (Kipf & Welling)')
        except Exception as e:  # any network or archive failure: go on
            log(f'[pyg_qgnn] could not download {name} ({e.__class__.__name__}: '
                f'{e})')
    if not allow_synthetic:
        raise FileNotFoundError(f'no local copy of {name} and no download; '
                                f'set $PYG_QGNN_DATA or pass root')
    nodes, classes, features = _SYNTHETIC_SHAPE[name]
    log(f'[pyg_qgnn] *** {name} is not available offline: using a SYNTHETIC '
        f'stand-in (contextual SBM, {nodes} nodes, {classes} classes, '
        f'{features} features). Accuracies are not comparable to {name}. ***')
    data = contextual_sbm(nodes, classes, features)
    return LoadedGraph(data, classes, source='synthetic contextual SBM',
                       split='synthetic split (20 per class / 500 / 1000)')


def _from_raw(root: Path, name: str):
    cached = cache_root() / 'planetoid'
    raw = cached / name / 'raw'
    raw.mkdir(parents=True, exist_ok=True)
    for src in (root / name / 'raw').iterdir():
        dst = raw / src.name
        if not dst.exists() or dst.stat().st_size != src.stat().st_size:
            shutil.copyfile(src, dst)
    dataset = Planetoid(str(cached), name)
    return dataset[0], dataset.num_classes


def _download(name: str):
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(15)  # offline machines should fail fast
    try:
        return Planetoid(str(cache_root() / 'download'), name)
    finally:
        socket.setdefaulttimeout(previous)
