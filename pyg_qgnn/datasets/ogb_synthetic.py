r"""A synthetic node-classification graph written in the raw layout of an
`OGB <https://ogb.stanford.edu>`_ dataset, so that
:class:`ogb.nodeproppred.PygNodePropPredDataset` reads and processes it as
it would the downloaded one (offline defaults and tests run ogb's own code
path).

The layout, for :obj:`name="ogbn-products"` (folder :obj:`ogbn_products`)::

    <root>/ogbn_products/
        RELEASE_v1.txt                    # its presence stops ogb's download
        raw/edge.csv.gz                   # "src,dst" per line, each edge once
        raw/node-feat.csv.gz              # one row of floats per node
        raw/node-label.csv.gz             # one class index per line
        raw/num-node-list.csv.gz          # the node count (one graph)
        raw/num-edge-list.csv.gz          # the edge count
        split/sales_ranking/{train,valid,test}.csv.gz   # node indices

The folder name, the split folder, the release version and whether ogb adds
the reverse edges come from ogb's own :obj:`master.csv`.

The graph has learnable structure: a planted partition (each node's label
is its block), features drawn around a random centre per class (a noisy
signal that a neighbourhood mean sharpens: with the defaults a nearest-centre
rule is right for about half of the nodes from their own features), edges
that stay inside a block with probability :obj:`homophily`, and
heavy-tailed popularity (log-normal weights) that makes degrees skewed and
ranks the nodes for the split: the most popular nodes train, the next
validate, the tail is tested, as in ogbn-products' sales-ranking split.
"""
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Tuple, Union

import torch
from torch import Tensor

PathLike = Union[str, os.PathLike]
#: Part of the cache key of a written graph: bump it when what
#: write_synthetic_ogb draws changes, so stale cached graphs are not reused.
GENERATOR_VERSION = 1


def ogb_node_meta(name: str):
    r"""The row of ogb's :obj:`nodeproppred/master.csv` for :obj:`name` (a
    :class:`pandas.Series`)."""
    import ogb.nodeproppred
    import pandas as pd

    master = pd.read_csv(
        Path(ogb.nodeproppred.__file__).parent / 'master.csv', index_col=0,
        keep_default_na=False)
    supported = [n for n in master if _writable(master[n])]
    if name not in master or name not in supported:
        raise ValueError(f"'name' must be an OGB node-classification dataset "
                         f"this writer can lay out, one of {supported} "
                         f"(got {name!r})")
    return master[name]


def _writable(meta) -> bool:
    r"""A single homogeneous graph in CSV files, with node features, one
    multiclass label per node and no additional node or edge files."""
    return (meta['is hetero'] == 'False' and meta['binary'] == 'False'
            and meta['task type'] == 'multiclass classification'
            and int(meta['num tasks']) == 1
            and meta['has_node_attr'] == 'True'
            and meta['has_edge_attr'] == 'False'
            and meta['additional node files'] == 'None'
            and meta['additional edge files'] == 'None')


def ogb_dir_name(name: str) -> str:
    r"""The folder ogb keeps :obj:`name` in (:obj:`"ogbn-products"` ->
    :obj:`"ogbn_products"`)."""
    return '_'.join(name.split('-'))


def planted_partition(num_nodes: int, num_classes: int, num_features: int,
                      avg_degree: float, homophily: float,
                      feature_signal: float, seed: int
                      ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""Node features, labels, undirected edges (each once, as
    :obj:`[2, E]` with :obj:`src < dst`, no self-loops) and popularity
    weights of the graph described in the module notes."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(num_classes, (num_nodes, ), generator=gen)
    centres = torch.randn(num_classes, num_features, generator=gen)
    centres = feature_signal * centres / centres.norm(dim=1, keepdim=True)
    x = centres[y] + torch.randn(num_nodes, num_features, generator=gen)
    popularity = torch.exp(torch.randn(num_nodes, generator=gen))
    num_edges = max(1, int(round(num_nodes * avg_degree / 2)))
    # Endpoints are drawn by popularity; the other end is drawn from the
    # same block with probability `homophily`, else from the whole graph.
    src = torch.multinomial(popularity, num_edges, replacement=True,
                            generator=gen)
    dst = torch.multinomial(popularity, num_edges, replacement=True,
                            generator=gen)
    inside = torch.rand(num_edges, generator=gen) < homophily
    for c in range(num_classes):
        members = (y == c).nonzero().view(-1)
        wanted = (inside & (y[src] == c)).nonzero().view(-1)
        if wanted.numel():
            pick = torch.multinomial(popularity[members], wanted.numel(),
                                     replacement=True, generator=gen)
            dst[wanted] = members[pick]
    edges = torch.stack([torch.minimum(src, dst), torch.maximum(src, dst)])
    edges = edges[:, edges[0] != edges[1]].unique(dim=1)
    return x, y, edges, popularity


def ranked_split(popularity: Tensor, fractions: Tuple[float, float]
                 ) -> Tuple[Tensor, Tensor, Tensor]:
    r"""Train, validation and test indices (each sorted): the most popular
    :obj:`fractions[0]` of the nodes, the next :obj:`fractions[1]`, the
    rest."""
    order = popularity.argsort(descending=True)
    num_train = max(1, int(round(fractions[0] * order.numel())))
    num_val = max(1, int(round(fractions[1] * order.numel())))
    if num_train + num_val >= order.numel():
        raise ValueError(f"'split' {tuple(fractions)} leaves no test nodes "
                         f"among {order.numel()}")
    parts = order[:num_train], order[num_train:num_train + num_val], \
        order[num_train + num_val:]
    return tuple(part.sort().values for part in parts)


def _check(num_nodes, num_features, num_classes, avg_degree, homophily,
           feature_signal, split, meta):
    for key, value in (('num_nodes', num_nodes),
                       ('num_features', num_features),
                       ('num_classes', num_classes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"'{key}' must be a positive int (got {value!r})")
    if num_classes > int(meta['num classes']):
        raise ValueError(f"'num_classes' must be at most "
                         f"{meta['num classes']}, the classes of "
                         f"{meta.name} (got {num_classes})")
    if num_nodes < 3:
        raise ValueError(f"'num_nodes' must be at least 3, one per split "
                         f"(got {num_nodes})")
    if not 0 < avg_degree < num_nodes:
        raise ValueError(f"'avg_degree' must be in (0, num_nodes) "
                         f"(got {avg_degree!r})")
    if not 0 <= homophily <= 1:
        raise ValueError(f"'homophily' must be in [0, 1] (got {homophily!r})")
    if not feature_signal >= 0:
        raise ValueError(f"'feature_signal' must be >= 0 "
                         f"(got {feature_signal!r})")
    if len(split) != 2 or not all(0 < f < 1 for f in split) or \
            sum(split) >= 1:
        raise ValueError(f"'split' must be (train, validation) fractions in "
                         f"(0, 1) that leave test nodes (got {split!r})")


def _write_csv(path: Path, values, float_format=None):
    import pandas as pd
    pd.DataFrame(values).to_csv(path, header=False, index=False,
                                compression='gzip', float_format=float_format)


def write_synthetic_ogb(root: PathLike, name: str = 'ogbn-products',
                        num_nodes: int = 20_000, num_features: int = 100,
                        num_classes: int = 47, avg_degree: float = 20.0,
                        homophily: float = 0.7, feature_signal: float = 2.0,
                        split: Tuple[float, float] = (0.08, 0.02),
                        seed: int = 0) -> Path:
    r"""Writes the synthetic graph of the module notes into
    :obj:`root/<ogb folder of name>/` and returns that folder; pass
    :obj:`root` to :class:`ogb.nodeproppred.PygNodePropPredDataset`.

    Args:
        root (str or os.PathLike): Where the dataset folder goes (created;
            an existing dataset folder is replaced).
        name (str, optional): The OGB dataset whose layout to write.
            (default: :obj:`"ogbn-products"`)
        num_nodes (int, optional): Nodes. (default: :obj:`20000`)
        num_features (int, optional): Feature columns (ogbn-products: 100).
            (default: :obj:`100`)
        num_classes (int, optional): Classes the labels use, at most the
            dataset's (ogbn-products: 47); ogb still reports the dataset's
            count. (default: :obj:`47`)
        avg_degree (float, optional): Mean degree before duplicate edges
            are merged. (default: :obj:`20.0`)
        homophily (float, optional): Share of edges drawn inside a block.
            (default: :obj:`0.7`)
        feature_signal (float, optional): Distance of each class centre
            from the origin, against unit noise in every feature.
            (default: :obj:`2.0`)
        split (tuple, optional): Train and validation fractions; the rest
            is tested (ogbn-products: 8% / 2% / 90%).
            (default: :obj:`(0.08, 0.02)`)
        seed (int, optional): Seed of everything drawn. (default: :obj:`0`)
    """
    meta = ogb_node_meta(name)
    split = tuple(split)
    _check(num_nodes, num_features, num_classes, avg_degree, homophily,
           feature_signal, split, meta)
    x, y, edges, popularity = planted_partition(
        num_nodes, num_classes, num_features, avg_degree, homophily,
        feature_signal, seed)
    if meta['add_inverse_edge'] != 'True':  # ogb reads the edges as given
        edges = torch.cat([edges, edges.flip(0)], dim=1)
    target = Path(root) / ogb_dir_name(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and moved in whole, so a reader never sees
    # half a dataset.
    scratch = Path(tempfile.mkdtemp(prefix='.writing-', dir=target.parent))
    try:
        raw = scratch / 'raw'
        raw.mkdir()
        _write_csv(raw / 'edge.csv.gz', edges.t().numpy())
        _write_csv(raw / 'node-feat.csv.gz', x.numpy(), float_format='%.5f')
        _write_csv(raw / 'node-label.csv.gz', y.view(-1, 1).numpy())
        _write_csv(raw / 'num-node-list.csv.gz', [[num_nodes]])
        _write_csv(raw / 'num-edge-list.csv.gz', [[edges.size(1)]])
        folder = scratch / 'split' / meta['split']
        folder.mkdir(parents=True)
        for part, index in zip(('train', 'valid', 'test'),
                               ranked_split(popularity, split)):
            _write_csv(folder / f'{part}.csv.gz', index.view(-1, 1).numpy())
        settings = dict(name=name, num_nodes=num_nodes,
                        num_features=num_features, num_classes=num_classes,
                        avg_degree=avg_degree, homophily=homophily,
                        feature_signal=feature_signal, split=list(split),
                        seed=seed)
        (scratch / f"RELEASE_v{meta['version']}.txt").write_text(
            f'SYNTHETIC stand-in for {name} written by pyg_qgnn '
            f'(planted partition), not the OGB release.\n'
            f'{json.dumps(settings)}\n')
        if target.exists():
            shutil.rmtree(target)
        os.replace(scratch, target)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return target


def synthetic_key(**settings) -> str:
    r"""A short name for a set of :func:`write_synthetic_ogb` arguments (the
    cache folder of that graph)."""
    settings = dict(settings, generator_version=GENERATOR_VERSION)
    text = json.dumps(settings, sort_keys=True, default=list)
    return hashlib.sha1(text.encode()).hexdigest()[:12]
