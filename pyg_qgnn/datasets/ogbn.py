r"""OGB node-classification datasets (ogbn-products) through ogb's own
:class:`~ogb.nodeproppred.PygNodePropPredDataset`, from wherever they are.

Lookup order: :obj:`root`, :obj:`$PYG_QGNN_DATA`, then :obj:`../shared/data`,
each used if it holds :obj:`<ogb folder>/raw/` (:obj:`ogbn_products/raw/`,
as ogb's download unpacks it). The raw and split files are linked into a
cache folder where ogb writes its processed copy, so a data folder is never
written to. Offline, a clearly announced synthetic graph in the same raw
layout (:func:`~pyg_qgnn.datasets.ogb_synthetic.write_synthetic_ogb`) goes
through the same ogb code path.
"""
import hashlib
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional

import torch
from torch import Tensor
from torch_geometric.data import Data

from pyg_qgnn.datasets.locate import cache_root, find_raw
from pyg_qgnn.datasets.ogb_synthetic import (
    ogb_dir_name,
    ogb_node_meta,
    synthetic_key,
    write_synthetic_ogb,
)


@dataclass
class LoadedOGB:
    r"""An OGB node-classification graph with its official split."""
    data: Data  # x, edge_index, y of shape [N] (ogb's [N, 1] flattened)
    split_idx: Dict[str, Tensor]  # 'train', 'valid', 'test' node indices
    num_classes: int
    name: str  # e.g. "ogbn-products"
    source: str  # where it came from, for the report
    synthetic: bool = False
    settings: dict = field(default_factory=dict)  # of a synthetic graph

    @property
    def kind(self) -> str:
        r""":obj:`"synthetic"` for a stand-in, else :obj:`"real"`."""
        return 'synthetic' if self.synthetic else 'real'

    @property
    def split(self) -> str:
        r"""The split, named with its sizes."""
        sizes = ' / '.join(f'{len(self.split_idx[k]):,} {k}'
                           for k in ('train', 'valid', 'test'))
        rule = 'synthetic popularity ranking' if self.synthetic else \
            f"official {ogb_node_meta(self.name)['split']} split"
        return f'{rule} ({sizes})'

    def describe(self) -> str:
        title = self.name if not self.synthetic else \
            f'a SYNTHETIC stand-in for {self.name}'
        return (f'{title}: {self.data.num_nodes:,} nodes, '
                f'{self.data.num_edges:,} edges, {self.data.num_features} '
                f'features, {self.num_classes} classes; {self.split} '
                f'({self.source})')


@contextmanager
def _pyg_safe_globals() -> Iterator[None]:
    # ogb reads its processed file with torch.load, which only loads tensors
    # and allowlisted classes; these are the PyG containers it holds.
    from torch_geometric.data.data import DataEdgeAttr, DataTensorAttr
    from torch_geometric.data.storage import GlobalStorage
    with torch.serialization.safe_globals([DataEdgeAttr, DataTensorAttr,
                                           GlobalStorage]):
        yield


def read_ogb_node_dataset(name: str, root: os.PathLike) -> tuple:
    r"""Runs :class:`~ogb.nodeproppred.PygNodePropPredDataset` on
    :obj:`root` (holding :obj:`<ogb folder>/` with its release marker);
    returns :obj:`(data, split_idx, num_classes)` with flat labels."""
    from ogb.nodeproppred import PygNodePropPredDataset

    with _pyg_safe_globals(), warnings.catch_warnings():
        # ogb turns read-only pandas arrays into tensors it never writes to.
        warnings.filterwarnings('ignore', message='The given NumPy array is '
                                'not writable')
        dataset = PygNodePropPredDataset(name, root=str(root))
        split_idx = dataset.get_idx_split()
    data = dataset[0]
    data.y = data.y.view(-1)
    return data, split_idx, dataset.num_classes


def linked_copy(root: Path, name: str) -> Path:
    r"""A cache root whose :obj:`<ogb folder>/` links :obj:`root`'s raw and
    split files (no copy of gigabytes) and holds the release marker, so
    ogb neither downloads nor writes into :obj:`root`."""
    folder = ogb_dir_name(name)
    source = (root / folder).resolve()
    digest = hashlib.sha1(str(source).encode()).hexdigest()[:12]
    cached = cache_root() / 'ogb' / digest
    target = cached / folder
    (target / 'raw').mkdir(parents=True, exist_ok=True)
    for src in (source / 'raw').iterdir():
        dst = target / 'raw' / src.name
        if not dst.exists():
            dst.symlink_to(src)
    if not (source / 'split').is_dir():
        raise FileNotFoundError(f"'root' {str(root)!r}: {folder}/ has no "
                                f"split/ folder (ogb's download has one)")
    if not (target / 'split').exists():
        (target / 'split').symlink_to(source / 'split',
                                      target_is_directory=True)
    release = target / f"RELEASE_v{ogb_node_meta(name)['version']}.txt"
    release.touch()
    return cached


def load_ogbn(name: str = 'ogbn-products', root: Optional[str] = None,
              allow_synthetic: bool = True, synthetic_nodes: int = 20_000,
              synthetic_seed: int = 0,
              log: Callable[[str], None] = print) -> LoadedOGB:
    r"""Loads an OGB node-classification dataset with its official split.

    Args:
        name (str, optional): The OGB name. (default: :obj:`"ogbn-products"`)
        root (str, optional): A folder holding :obj:`<ogb folder>/raw/`
            (for ogbn-products :obj:`ogbn_products/raw/`, as ogb's download
            unpacks it); if given and it does not, an error is raised.
            (default: :obj:`None`)
        allow_synthetic (bool, optional): Fall back to the synthetic graph
            in OGB's raw layout when no copy is found. (default: :obj:`True`)
        synthetic_nodes (int, optional): Nodes of that graph.
            (default: :obj:`20000`)
        synthetic_seed (int, optional): Its seed. (default: :obj:`0`)
        log (callable, optional): Where announcements go.
            (default: :obj:`print`)
    """
    meta = ogb_node_meta(name)
    folder = ogb_dir_name(name)
    local = find_raw(folder, root, what=f'{name} raw files (edge.csv.gz, ...)')
    if local is not None:
        data, split_idx, num_classes = read_ogb_node_dataset(
            name, linked_copy(local, name))
        return LoadedOGB(data, split_idx, num_classes, name,
                         source=str(local / folder))
    if not allow_synthetic:
        raise FileNotFoundError(f'no local copy of {name} ({folder}/raw/); '
                                f'set $PYG_QGNN_DATA or pass root')
    settings = dict(name=name, num_nodes=synthetic_nodes, seed=synthetic_seed)
    cached = cache_root() / 'ogb' / f'synthetic-{synthetic_key(**settings)}'
    if not (cached / folder / f"RELEASE_v{meta['version']}.txt").exists():
        write_synthetic_ogb(cached, **settings)
    log(f'[pyg_qgnn] *** {name} is not available offline: using a SYNTHETIC '
        f'graph in its raw OGB layout ({synthetic_nodes:,} nodes, planted '
        f'partition), processed by ogb. Accuracies are not comparable to '
        f'{name}. ***')
    data, split_idx, num_classes = read_ogb_node_dataset(name, cached)
    return LoadedOGB(data, split_idx, num_classes, name,
                     source=f'synthetic planted partition, OGB raw layout '
                     f'({cached / folder})', synthetic=True,
                     settings=settings)
