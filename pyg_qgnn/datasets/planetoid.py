r"""Planetoid citation graphs (Cora, CiteSeer, PubMed) from wherever they are.

Lookup order: local copies (see :mod:`pyg_qgnn.datasets.locate`), then PyG's
own download, and, offline, a clearly announced synthetic stand-in
(:func:`contextual_sbm`).
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from torch_geometric.data import Data
from torch_geometric.datasets import Planetoid

from pyg_qgnn.datasets.locate import (
    cache_root,
    cached_copy,
    download_timeout,
    find_raw,
)
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
    synthetic: bool = False  # a stand-in, not the named dataset
    name: str = ''  # the dataset's canonical name, e.g. "Cora"

    @property
    def kind(self) -> str:
        r""":obj:`"synthetic"` for a stand-in, else :obj:`"real"`."""
        return 'synthetic' if self.synthetic else 'real'


def canonical_planetoid_name(name: str) -> str:
    try:
        return PLANETOID_NAMES[name.lower()]
    except KeyError:
        raise ValueError(f"'dataset' must be a Planetoid name, one of "
                         f"{sorted(PLANETOID_NAMES.values())} (got {name!r})"
                         ) from None


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
    local = find_raw(name, root, what='Planetoid raw files')
    if local is not None:
        return LoadedGraph(*_from_raw(local, name),
                           source=str(local / name / 'raw'),
                           split='public Planetoid split (Kipf & Welling)',
                           name=name)
    if allow_download:
        try:
            dataset = _download(name)
            return LoadedGraph(dataset[0], dataset.num_classes,
                               source='PyG download',
                               split='public Planetoid split (Kipf & Welling)',
                               name=name)
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
                       split='synthetic split (20 per class / 500 / 1000)',
                       synthetic=True, name=name)


def _from_raw(root: Path, name: str):
    dataset = Planetoid(str(cached_copy(root, name, 'planetoid')), name)
    return dataset[0], dataset.num_classes


def _download(name: str):
    with download_timeout():
        return Planetoid(str(cache_root() / 'download'), name)
