import os
import pickle

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from pyg_qgnn.datasets.recsys import (
    RecSysData,
    carve_validation,
    find_recsys,
    load_recsys,
    normalized_adjacency,
    read_interaction_file,
    read_sparse_pickle,
    synthetic_interactions,
)
from tests.conftest import SHARED_DATA, has_shared


def write_text_dataset(folder, train, test, users=None, items=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / 'train.txt').write_text(train)
    (folder / 'test.txt').write_text(test)
    if users is not None:
        (folder / 'user_list.txt').write_text(
            'org_id remap_id\n' + ''.join(f'{i} {i}\n' for i in range(users)))
    if items is not None:
        (folder / 'item_list.txt').write_text(
            'org_id remap_id\n' + ''.join(f'{i} {i}\n' for i in range(items)))
    return folder


# LightGCN text format ########################################################


def test_reads_pairs_and_skips_blank_lines(tmp_path):
    path = tmp_path / 'train.txt'
    path.write_text('0 3 1\n\n2\n1 0\n')
    pairs = read_interaction_file(path)
    assert pairs.tolist() == [[0, 0, 1], [3, 1, 0]]


@pytest.mark.parametrize('text,line,what', [
    ('0 1 2\n1 x 3\n', 2, "'x' is not an integer id"),
    ('0 1\n1 2\n2 3.5\n', 3, "'3.5' is not an integer id"),
    ('0 1\n-1 2\n', 2, 'negative id -1'),
    ('0 1 7\n', 1, 'item id 7 is out of range'),
    ('0 1\n5 2\n', 2, 'user id 5 is out of range'),
])
def test_malformed_lines_name_file_and_line(tmp_path, text, line, what):
    path = tmp_path / 'train.txt'
    path.write_text(text)
    with pytest.raises(ValueError) as info:
        read_interaction_file(path, num_users=3, num_items=5)
    assert f'train.txt line {line}: ' in str(info.value)
    assert what in str(info.value)


def test_counts_come_from_the_id_lists(tmp_path):
    folder = write_text_dataset(tmp_path / 'toy', '0 0 1 2\n1 2 3\n',
                                '0 3\n1 4\n', users=3, items=6)
    data = load_recsys('toy', str(tmp_path), log=lambda m: None)
    # User 2 has no training item: left out (ids renumbered).
    assert (data.num_users, data.num_items) == (2, 6)
    assert data.source == str(folder)
    with pytest.raises(ValueError, match='test.txt line 2: item id 6'):
        write_text_dataset(tmp_path / 'bad', '0 0\n', '0 1\n1 6\n', users=2,
                           items=6)
        load_recsys('bad', str(tmp_path))


def test_users_without_training_items_are_left_out_and_logged(tmp_path):
    write_text_dataset(tmp_path / 'toy', '0 0 1 2 3\n1\n2 1 2 3 4\n',
                       '0 4\n1 0\n2 0\n')
    logged = []
    data = load_recsys('toy', str(tmp_path), log=logged.append)
    assert data.num_users == 2
    assert 'left out 1 users with no training interaction' in logged[0]
    assert '1 test interactions' in logged[0]
    assert data.test.tolist() == [[0, 1], [4, 0]]


def test_validation_is_carved_reproducibly(tmp_path):
    lines = ''.join(f'{u} ' + ' '.join(str(i) for i in range(u % 7, 30)) +
                    '\n' for u in range(20))
    write_text_dataset(tmp_path / 'toy', lines, '0 30\n', items=31)
    first = load_recsys('toy', str(tmp_path), seed=3)
    again = load_recsys('toy', str(tmp_path), seed=3)
    other = load_recsys('toy', str(tmp_path), seed=4)
    assert torch.equal(first.val, again.val)
    assert not torch.equal(first.val, other.val)
    assert 'seed 3' in first.val_origin
    # Disjoint, and together the original training pairs.
    key = lambda p: set(map(tuple, p.t().tolist()))  # noqa: E731
    assert not key(first.train) & key(first.val)
    assert len(key(first.train) | key(first.val)) == sum(30 - u % 7
                                                         for u in range(20))


def test_carve_keeps_a_users_last_item():
    train = torch.tensor([[0, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2],
                          [0, 0, 1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]])
    kept, val = carve_validation(train, 0.2, seed=0)
    assert val[0].tolist() == [1, 2, 2]  # 1 of 2, 2 of 10, none of 1
    assert kept.size(1) + val.size(1) == train.size(1)
    with pytest.raises(ValueError, match="'val_fraction'"):
        carve_validation(train, 1.0)


def test_explicit_root_without_data_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="'root'"):
        find_recsys('gowalla', str(tmp_path))


def test_synthetic_stand_in_is_announced(monkeypatch):
    monkeypatch.setattr('pyg_qgnn.datasets.recsys.shared_data_candidates',
                        lambda: [])
    monkeypatch.delenv('PYG_QGNN_DATA', raising=False)
    logged = []
    data = load_recsys('gowalla', allow_download=False, log=logged.append)
    assert data.synthetic and data.kind == 'synthetic'
    assert 'SYNTHETIC' in logged[0] and 'SYNTHETIC' in data.describe()
    with pytest.raises(FileNotFoundError):
        load_recsys('gowalla', allow_download=False, allow_synthetic=False)


# Pickled SciPy matrices ######################################################


def test_reads_pickled_matrices(tmp_path):
    matrix = sp.coo_matrix((np.ones(3), ([0, 1, 2], [2, 0, 1])), shape=(3, 4))
    for name in ('trnMat', 'valMat', 'tstMat'):
        with open(tmp_path / f'{name}.pkl', 'wb') as f:
            pickle.dump(matrix if name == 'trnMat' else matrix.tocsr(), f)
    pairs, shape = read_sparse_pickle(tmp_path / 'trnMat.pkl')
    assert shape == (3, 4)
    assert sorted(map(tuple, pairs.t().tolist())) == [(0, 2), (1, 0), (2, 1)]
    data = load_recsys('x', str(tmp_path))
    assert data.val_origin == 'file' and data.val.size(1) == 3


class Payload:
    def __reduce__(self):
        return (os.system, ('touch PWNED',))


def test_pickle_with_code_is_refused_before_running(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / 'trnMat.pkl'
    path.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ValueError, match='refused to load .*system'):
        read_sparse_pickle(path)
    assert not (tmp_path / 'PWNED').exists()


def test_pickle_of_another_object_is_refused(tmp_path):
    path = tmp_path / 'trnMat.pkl'
    path.write_bytes(pickle.dumps(np.arange(4)))
    with pytest.raises(ValueError, match='not a SciPy sparse matrix'):
        read_sparse_pickle(path)
    path.write_bytes(pickle.dumps({'a': 1}) + b'')
    with pytest.raises(ValueError, match='not a SciPy sparse matrix'):
        read_sparse_pickle(path)
    path.write_bytes(b'garbage')
    with pytest.raises(ValueError, match='not a readable pickled'):
        read_sparse_pickle(path)


# Graph and subsample #########################################################


def test_graph_is_one_node_set_both_directions():
    data = RecSysData('toy', 2, 3, torch.tensor([[0, 1], [2, 0]]),
                      torch.empty(2, 0, dtype=torch.long),
                      torch.empty(2, 0, dtype=torch.long), 'test')
    graph = data.graph()
    assert graph.num_nodes == 5
    assert sorted(map(tuple, graph.edge_index.t().tolist())) == [
        (0, 4), (1, 2), (2, 1), (4, 0)]
    adj = normalized_adjacency(data.train, 2, 3).to_dense()
    expected = torch.zeros(5, 5)
    expected[0, 4] = expected[4, 0] = expected[1, 2] = expected[2, 1] = 1.0
    assert torch.allclose(adj, expected)  # every degree is 1


def test_subsample_renumbers_and_drops_rare_items():
    data = synthetic_interactions(num_users=200, num_items=300, seed=1)
    small = data.subsample(50, seed=2, min_item_interactions=3)
    assert small.num_users <= 50
    counts = torch.bincount(small.train[1], minlength=small.num_items)
    assert int(counts.min()) >= 3
    for split in ('train', 'val', 'test'):
        pairs = small.split(split)
        assert int(pairs[0].max()) < small.num_users
        assert int(pairs[1].max()) < small.num_items
    assert torch.equal(data.subsample(50, seed=2).train,
                       data.subsample(50, seed=2).train)
    with pytest.raises(ValueError, match="'num_users'"):
        data.subsample(0)


@pytest.mark.skipif(not has_shared('gowalla'),
                    reason='shared Gowalla data absent')
def test_real_gowalla_counts():
    data = load_recsys('gowalla', str(SHARED_DATA), log=lambda m: None)
    assert (data.num_users, data.num_items) == (29858, 40981)
    assert data.train.size(1) + data.val.size(1) == 810128
    assert data.test.size(1) == 217242


@pytest.mark.skipif(not has_shared('lightgnn_yelp'),
                    reason='shared LightGNN Yelp data absent')
def test_real_yelp_pickles_load_through_the_restricted_unpickler():
    logged = []
    data = load_recsys('lightgnn_yelp', str(SHARED_DATA), log=logged.append)
    assert data.num_items == 26822 and data.num_users == 42174
    assert data.train.size(1) == 182357 and data.val_origin == 'file'
    assert 'left out 538 users' in logged[0]
