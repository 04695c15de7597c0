"""Tests of the ModelNet40 loader: both on-disk layouts, the split rules,
the cache (never the data folder) and the synthetic stand-in."""
import math

import numpy as np
import pytest
import torch

from pyg_qgnn.datasets import load_modelnet40, synthetic_shapes
from pyg_qgnn.datasets import modelnet
from pyg_qgnn.datasets.modelnet import (
    MODELNET40_CLASSES,
    MODELNET40_TRAIN_COUNTS,
    SYNTHETIC_CLASSES,
    normalize_unit_sphere,
)
from tests.conftest import SHARED_DATA, has_shared

SUBSET = 'modelnet40_normal_resampled_subset'


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv('PYG_QGNN_CACHE', str(tmp_path / 'cache'))
    monkeypatch.delenv('PYG_QGNN_DATA', raising=False)


def listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob('*'))


def assert_normalized(clouds):
    for cloud in clouds:
        assert cloud.pos.mean(0).abs().max() < 1e-5
        assert cloud.pos.norm(dim=1).max() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.skipif(not has_shared(SUBSET), reason='shared ModelNet40 subset '
                    'absent')
def test_shared_subset_loads_with_inferred_split(tmp_path, monkeypatch):
    folder = SHARED_DATA / SUBSET
    before = listing(folder)
    data = load_modelnet40(str(SHARED_DATA), points=128, log=lambda m: None)
    assert (len(data.train), len(data.test)) == (127, 29)  # see SOURCE.md
    assert data.num_classes == 40 and data.kind == 'real'
    assert data.class_names == list(MODELNET40_CLASSES)
    assert 'inferred' in data.split
    assert {int(c.y) for c in data.train + data.test} == \
        set(range(40)) - {MODELNET40_CLASSES.index('door')}
    assert all(c.pos.shape == (128, 3) for c in data.train)
    assert_normalized(data.train[:5])
    # The first 128 rows of the first airplane file, normalized.
    first = sorted((folder / 'airplane').glob('*.txt'))[0]
    rows = torch.from_numpy(np.loadtxt(first, delimiter=',', max_rows=128,
                                       usecols=(0, 1, 2), dtype=np.float32))
    assert torch.allclose(data.train[0].pos, normalize_unit_sphere(rows))
    assert int(data.train[0].y) == 0
    assert listing(folder) == before  # nothing written into the data
    assert list((tmp_path / 'cache' / 'modelnet').glob('*.safetensors'))

    # A second load comes from the cache, without reading the files.
    monkeypatch.setattr(modelnet, '_read_cloud', None)
    again = load_modelnet40(str(SHARED_DATA), points=128)
    assert torch.equal(again.test[3].pos, data.test[3].pos)


@pytest.mark.skipif(not has_shared(SUBSET), reason='shared ModelNet40 subset '
                    'absent')
def test_more_points_than_the_files_hold_is_an_error():
    with pytest.raises(ValueError, match="'points' must be at most 2048"):
        load_modelnet40(str(SHARED_DATA), points=4096, log=lambda m: None)


def write_resampled(folder, shapes, lists=None):
    r""":obj:`shapes`: ``{class: [numbers]}``; :obj:`lists`: train and test
    ids for the split files."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / 'modelnet40_shape_names.txt').write_text(
        '\n'.join(MODELNET40_CLASSES) + '\n')
    gen = np.random.default_rng(0)
    for name, numbers in shapes.items():
        (folder / name).mkdir()
        for number in numbers:
            rows = gen.normal(size=(40, 6))
            np.savetxt(folder / name / f'{name}_{number:04d}.txt', rows,
                       delimiter=',', fmt='%.6f')
    if lists is not None:
        for split, ids in zip(('train', 'test'), lists):
            (folder / f'modelnet40_{split}.txt').write_text('\n'.join(ids))


def test_resampled_layout_uses_complete_split_files(tmp_path):
    folder = tmp_path / 'modelnet40_normal_resampled'
    write_resampled(folder, {'cup': [1, 2, 90], 'vase': [3]},
                    (['cup_0001', 'cup_0090'], ['cup_0002', 'vase_0003']))
    data = load_modelnet40(str(tmp_path), points=16, log=lambda m: None)
    assert data.split.startswith('official (modelnet40_train.txt')
    cup, vase = MODELNET40_CLASSES.index('cup'), MODELNET40_CLASSES.index(
        'vase')
    assert [int(c.y) for c in data.train] == [cup, cup]
    assert sorted(int(c.y) for c in data.test) == [cup, vase]


def test_incomplete_split_files_fall_back_to_shape_numbers(tmp_path):
    cup_train = MODELNET40_TRAIN_COUNTS['cup']  # 79: 80 onwards are tests
    write_resampled(tmp_path, {'cup': [1, cup_train, cup_train + 1]},
                    (['cup_0001'], []))
    data = load_modelnet40(str(tmp_path), points=8, log=lambda m: None)
    assert (len(data.train), len(data.test)) == (2, 1)
    assert 'inferred' in data.split


def write_off(path, seed):
    r"""A tetrahedron, stretched at random."""
    gen = np.random.default_rng(seed)
    corners = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]])
    corners = corners * gen.uniform(0.5, 2.0, size=3)
    lines = ['OFF', '4 4 0'] + [' '.join(f'{v:.4f}' for v in c)
                                for c in corners]
    lines += ['3 0 1 2', '3 0 1 3', '3 0 2 3', '3 1 2 3']
    path.write_text('\n'.join(lines) + '\n')


def write_pyg_layout(root):
    raw = root / 'ModelNet40' / 'raw'
    for name, counts in (('chair', (2, 1)), ('sofa', (1, 2))):
        for split, count in zip(('train', 'test'), counts):
            (raw / name / split).mkdir(parents=True)
            for i in range(count):
                write_off(raw / name / split / f'{name}_{i + 1:04d}.off',
                          seed=len(name) * 10 + i)
    return raw


def test_pyg_layout_samples_points_on_meshes(tmp_path, monkeypatch):
    data_root = tmp_path / 'data'
    raw = write_pyg_layout(data_root)
    before = listing(data_root)
    data = load_modelnet40(str(data_root), points=50, seed=3,
                           log=lambda m: None)
    assert data.split.startswith('official (train/ and test/')
    assert [int(c.y) for c in data.train] == [8, 8, 30]  # chair, sofa
    assert sorted(int(c.y) for c in data.test) == [8, 30, 30]
    assert data.num_classes == 40 and data.num_points == 50
    assert_normalized(data.train + data.test)
    assert listing(data_root) == before  # no processed/ folder beside raw/
    # Sampling is seeded: a fresh cache gives the same clouds, another seed
    # other clouds.
    monkeypatch.setenv('PYG_QGNN_CACHE', str(tmp_path / 'cache2'))
    same = load_modelnet40(str(raw.parent), points=50, seed=3,
                           log=lambda m: None)
    other = load_modelnet40(str(data_root), points=50, seed=4,
                            log=lambda m: None)
    assert torch.equal(same.train[1].pos, data.train[1].pos)
    assert not torch.equal(other.train[1].pos, data.train[1].pos)


def test_root_without_modelnet_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="'root'.*holds no ModelNet40"):
        load_modelnet40(str(tmp_path))


@pytest.mark.parametrize('points', [0, -3, 2.5, True])
def test_bad_points_name_the_argument(points):
    with pytest.raises(ValueError, match="'points' must be a positive int"):
        load_modelnet40(points=points)


def test_offline_fallback_is_synthetic_and_announced(monkeypatch):
    monkeypatch.setattr('pyg_qgnn.datasets.locate.shared_data_candidates',
                        lambda: [])
    messages = []
    data = load_modelnet40(points=32, log=messages.append)
    assert 'SYNTHETIC' in messages[-1] and data.kind == 'synthetic'
    assert 'SYNTHETIC stand-in' in data.describe()
    with pytest.raises(FileNotFoundError, match='ModelNet40'):
        load_modelnet40(allow_synthetic=False)


def test_synthetic_shapes_are_normalized_balanced_and_seeded():
    data = synthetic_shapes(points=64, train_per_class=3, test_per_class=2,
                            seed=1)
    classes = len(SYNTHETIC_CLASSES)
    assert (len(data.train), len(data.test)) == (3 * classes, 2 * classes)
    assert sorted(int(c.y) for c in data.test) == sorted(
        list(range(classes)) * 2)
    assert_normalized(data.train + data.test)
    again = synthetic_shapes(points=64, train_per_class=3, test_per_class=2,
                             seed=1)
    assert torch.equal(again.train[5].pos, data.train[5].pos)
    # A flat class stays flat up to the noise: its smallest extent is small.
    plane = next(c for c in data.train
                 if int(c.y) == SYNTHETIC_CLASSES.index('plane'))
    assert torch.linalg.svdvals(plane.pos - plane.pos.mean(0))[-1] < 0.5
    with pytest.raises(ValueError, match="'train_per_class'"):
        synthetic_shapes(train_per_class=0)


def test_normalize_unit_sphere_matches_pointnet_reference():
    pos = torch.tensor([[0., 0, 0], [2, 0, 0], [0, 4, 0], [2, 4, 0]])
    centroid = pos.mean(0)
    radius = max(math.dist(p.tolist(), centroid.tolist()) for p in pos)
    assert torch.allclose(normalize_unit_sphere(pos),
                          (pos - centroid) / radius)
    same = torch.ones(3, 3)  # one repeated point stays at the origin
    assert torch.equal(normalize_unit_sphere(same), torch.zeros(3, 3))


def test_a_broken_cache_entry_is_rebuilt(tmp_path):
    folder = tmp_path / 'data'
    write_resampled(folder, {'cup': [1, 80]})
    load_modelnet40(str(folder), points=8, log=lambda m: None)
    entry, = (tmp_path / 'cache' / 'modelnet').glob('*.safetensors')
    entry.write_bytes(b'not a safetensors file')
    data = load_modelnet40(str(folder), points=8, log=lambda m: None)
    assert (len(data.train), len(data.test)) == (1, 1)
