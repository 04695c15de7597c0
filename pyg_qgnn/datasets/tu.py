r"""TU graph-classification datasets (PROTEINS, MUTAG, ...) from wherever
they are: local copies of the raw TU files (see
:mod:`pyg_qgnn.datasets.locate`), then PyG's download, and, offline, a
clearly announced synthetic stand-in (:func:`synthetic_graph_classes`)."""
from dataclasses import dataclass
from typing import Callable, List, Optional

import torch
from torch_geometric.data import Data, InMemoryDataset
from torch_geometric.datasets import TUDataset
from torch_geometric.utils import stochastic_blockmodel_graph

from pyg_qgnn.datasets.locate import (
    cache_root,
    cached_copy,
    download_timeout,
    find_raw,
)


@dataclass
class LoadedDataset:
    dataset: InMemoryDataset
    source: str  # where it came from, for the report
    synthetic: bool = False

    @property
    def kind(self) -> str:
        return 'synthetic' if self.synthetic else 'real'


class GraphList(InMemoryDataset):
    r"""An in-memory dataset made of a list of graphs."""
    def __init__(self, graphs: List[Data]):
        super().__init__()
        self.data, self.slices = self.collate(graphs)


def synthetic_graph_classes(num_graphs: int = 600, num_node_types: int = 3,
                            seed: int = 0) -> GraphList:
    r"""Two classes of small graphs, like PROTEINS in size (about 20-60
    nodes, one-hot node types): class 1 graphs are made of two dense
    communities and favour node type 0, class 0 graphs are one sparser
    block. Learnable by a GNN, but not a benchmark."""
    gen = torch.Generator().manual_seed(seed)
    graphs = []
    for i in range(num_graphs):
        label = i % 2
        n = int(torch.randint(20, 60, (1, ), generator=gen))
        if label:
            sizes = [n // 2, n - n // 2]
            probs = torch.tensor([[0.3, 0.02], [0.02, 0.3]])
        else:
            sizes, probs = [n], torch.tensor([[0.12]])
        torch.manual_seed(seed * 100_003 + i)  # the SBM uses the global RNG
        edge_index = stochastic_blockmodel_graph(sizes, probs, directed=False)
        weights = torch.ones(num_node_types)
        weights[0] += 0.6 * label
        types = torch.multinomial(weights, n, replacement=True, generator=gen)
        x = torch.nn.functional.one_hot(types, num_node_types).float()
        graphs.append(Data(x=x, edge_index=edge_index,
                           y=torch.tensor([label])))
    return GraphList(graphs)


def load_tudataset(name: str = 'PROTEINS', root: Optional[str] = None,
                   allow_download: bool = True, allow_synthetic: bool = True,
                   log: Callable[[str], None] = print) -> LoadedDataset:
    r"""Loads a TU dataset through :class:`torch_geometric.datasets.TUDataset`,
    processed in the cache, never in the data folder.

    Args:
        name (str, optional): The TU name, e.g. :obj:`"PROTEINS"`.
            (default: :obj:`"PROTEINS"`)
        root (str, optional): A folder holding :obj:`<name>/raw/`; if given
            and it does not, an error is raised. (default: :obj:`None`)
        allow_download (bool, optional): Try PyG's download when no local
            copy exists. (default: :obj:`True`)
        allow_synthetic (bool, optional): Fall back to
            :func:`synthetic_graph_classes` when nothing else works.
            (default: :obj:`True`)
        log (callable, optional): Where announcements go. (default: :obj:`print`)
    """
    local = find_raw(name, root, what='TU raw files')
    if local is not None:
        dataset = TUDataset(str(cached_copy(local, name, 'tu')), name)
        return LoadedDataset(dataset, source=str(local / name / 'raw'))
    if allow_download:
        try:
            with download_timeout():
                dataset = TUDataset(str(cache_root() / 'download'), name)
            return LoadedDataset(dataset, source='PyG download')
        except Exception as e:  # any network or archive failure: go on
            log(f'[pyg_qgnn] could not download {name} '
                f'({e.__class__.__name__}: {e})')
    if not allow_synthetic:
        raise FileNotFoundError(f'no local copy of {name} and no download; '
                                f'set $PYG_QGNN_DATA or pass root')
    log(f'[pyg_qgnn] *** {name} is not available offline: using a SYNTHETIC '
        f'stand-in (600 graphs, 2 classes). Accuracies are not comparable to '
        f'{name}. ***')
    return LoadedDataset(synthetic_graph_classes(), source='synthetic graphs',
                         synthetic=True)
