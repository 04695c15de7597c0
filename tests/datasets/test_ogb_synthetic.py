import gzip

import pytest
import torch
from torch_geometric.utils import homophily, scatter

from pyg_qgnn.datasets.ogb_synthetic import (
    ogb_dir_name,
    ogb_node_meta,
    planted_partition,
    ranked_split,
    write_synthetic_ogb,
)
from pyg_qgnn.datasets.ogbn import read_ogb_node_dataset

SMALL = dict(num_nodes=400, num_features=12, num_classes=4, avg_degree=8.0,
             split=(0.2, 0.2))


@pytest.fixture(scope='module')
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp('ogb')
    folder = write_synthetic_ogb(root, **SMALL)
    return root, folder


def test_writes_the_raw_ogb_layout(written):
    root, folder = written
    assert folder == root / 'ogbn_products'
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob('*')
                   if p.is_file())
    assert files == [
        'RELEASE_v1.txt', 'raw/edge.csv.gz', 'raw/node-feat.csv.gz',
        'raw/node-label.csv.gz', 'raw/num-edge-list.csv.gz',
        'raw/num-node-list.csv.gz', 'split/sales_ranking/test.csv.gz',
        'split/sales_ranking/train.csv.gz', 'split/sales_ranking/valid.csv.gz']
    assert 'SYNTHETIC' in (folder / 'RELEASE_v1.txt').read_text()
    with gzip.open(folder / 'raw' / 'num-node-list.csv.gz', 'rt') as f:
        assert f.read().split() == ['400']
    with gzip.open(folder / 'raw' / 'edge.csv.gz', 'rt') as f:
        first = f.readline().strip().split(',')
    assert len(first) == 2 and all(part.isdigit() for part in first)


def test_ogb_reads_it_without_downloading(written):
    root, folder = written
    data, split_idx, num_classes = read_ogb_node_dataset('ogbn-products', root)
    assert num_classes == 47  # ogb's count for ogbn-products
    assert (data.num_nodes, data.num_features) == (400, 12)
    assert data.y.shape == (400, ) and int(data.y.max()) < 4
    with gzip.open(folder / 'raw' / 'num-edge-list.csv.gz', 'rt') as f:
        written_edges = int(f.read())
    # ogbn-products lists each edge once; ogb adds the reverse.
    assert data.edge_index.size(1) == 2 * written_edges
    assert bool((data.edge_index[0] != data.edge_index[1]).all())
    sizes = {k: v.numel() for k, v in split_idx.items()}
    assert sizes == dict(train=80, valid=80, test=240)
    every = torch.cat(list(split_idx.values())).sort().values
    assert torch.equal(every, torch.arange(400))
    assert (folder / 'processed').is_dir()


def test_structure_is_learnable():
    x, y, edges, _ = planted_partition(2000, 8, 16, avg_degree=10.0,
                                       homophily=0.7, feature_signal=1.5,
                                       seed=0)
    both = torch.cat([edges, edges.flip(0)], dim=1)
    assert homophily(both, y) > 0.5  # chance is 1/8
    centres = scatter(x, y, 0, reduce='mean')

    def nearest_centre_acc(features):
        return float(((features.unsqueeze(1) - centres).norm(dim=-1)
                      .argmin(-1) == y).float().mean())

    neighbourhood = scatter(x[both[0]], both[1], 0, dim_size=2000,
                            reduce='mean')
    raw, smoothed = nearest_centre_acc(x), nearest_centre_acc(neighbourhood)
    assert 0.3 < raw < 0.9  # features alone: a noisy signal
    assert smoothed > raw + 0.05  # the graph sharpens it


def test_popular_nodes_train_and_the_tail_is_tested():
    _, _, edges, popularity = planted_partition(1000, 4, 4, 10.0, 0.7, 1.0,
                                                seed=1)
    train, val, test = ranked_split(popularity, (0.1, 0.1))
    assert popularity[train].min() >= popularity[val].max()
    assert popularity[val].min() >= popularity[test].max()
    degree = torch.bincount(edges.reshape(-1), minlength=1000).float()
    assert degree[train].mean() > 2 * degree[test].mean()


def test_same_seed_same_graph():
    first = planted_partition(100, 3, 5, 4.0, 0.5, 1.0, seed=3)
    again = planted_partition(100, 3, 5, 4.0, 0.5, 1.0, seed=3)
    other = planted_partition(100, 3, 5, 4.0, 0.5, 1.0, seed=4)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])


def test_rewriting_replaces_the_folder(tmp_path):
    write_synthetic_ogb(tmp_path, **SMALL)
    (tmp_path / 'ogbn_products' / 'stale.txt').write_text('old')
    write_synthetic_ogb(tmp_path, **dict(SMALL, num_nodes=300))
    assert not (tmp_path / 'ogbn_products' / 'stale.txt').exists()
    assert [p.name for p in tmp_path.iterdir()] == ['ogbn_products']


def test_meta_and_folder_name_come_from_ogb():
    meta = ogb_node_meta('ogbn-products')
    assert (meta['split'], int(meta['num classes'])) == ('sales_ranking', 47)
    assert ogb_dir_name('ogbn-products') == 'ogbn_products'


@pytest.mark.parametrize('kwargs,match', [
    (dict(name='ogbn-mag'), r"'name'.*ogbn-products"),
    (dict(name='cora'), "'name'"),
    (dict(num_classes=48), r"'num_classes' must be at most 47"),
    (dict(num_nodes=2), "'num_nodes'"),
    (dict(num_features=0), "'num_features'"),
    (dict(homophily=1.5), "'homophily'"),
    (dict(avg_degree=0.0), "'avg_degree'"),
    (dict(feature_signal=-1.0), "'feature_signal'"),
    (dict(split=(0.6, 0.5)), "'split'"),
    (dict(split=(0.5, )), "'split'"),
])
def test_bad_input_is_named(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        write_synthetic_ogb(tmp_path, **dict(SMALL, **kwargs))
    assert list(tmp_path.iterdir()) == []  # nothing half-written
