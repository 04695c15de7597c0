r"""Implicit-feedback recommendation data (users × items) as one PyG graph.

Two on-disk formats are read, found by dataset name as the other loaders
find theirs (an explicit :obj:`root`, then :obj:`$PYG_QGNN_DATA`, then the
project's :obj:`../shared/data`; in each, :obj:`<root>/<name>/` or
:obj:`<root>/<name>/raw/`; without :obj:`root`, Gowalla, Yelp2018 and
Amazon-Book are then downloaded from the LightGCN repository):

* the LightGCN text format (the raw files of PyG's
  :class:`~torch_geometric.datasets.AmazonBook`): :obj:`train.txt` and
  :obj:`test.txt` with one line per user, :obj:`uid i1 i2 ...`, and
  optionally :obj:`user_list.txt` / :obj:`item_list.txt` (a header, then one
  row per id), whose row counts fix the numbers of users and items;
* pickled SciPy sparse matrices :obj:`trnMat.pkl`, :obj:`valMat.pkl`
  (optional) and :obj:`tstMat.pkl` (users × items), as LightGNN/SimRec ship
  them. They are read by :class:`SparseMatrixUnpickler`, which admits only
  the SciPy sparse and NumPy classes such files hold: a pickle naming any
  other class is refused before anything in it runs.

Users are nodes :math:`0..U-1` and items nodes :math:`U..U+I-1` of one
homogeneous graph (:meth:`RecSysData.graph`), the form
:class:`~torch_geometric.nn.models.LightGCN` and
:class:`~torch_geometric.nn.conv.LGConv` take. When the data has no
validation split, one is carved from each user's training items with a
fixed seed (:func:`carve_validation`); users with no training item are
left out (and counted in the log), since no model can rank for them.
Nothing is written next to the data: parsing is fast enough to need no
processed copy.
"""
import os
import pickle
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.utils import to_torch_csr_tensor

from pyg_qgnn.datasets.lightgcn_download import download_lightgcn
from pyg_qgnn.datasets.locate import shared_data_candidates

TEXT_FILES = ('train.txt', 'test.txt')
PICKLE_FILES = ('trnMat.pkl', 'tstMat.pkl')


@dataclass
class RecSysData:
    r"""A user-item interaction dataset split into train, validation and
    test interactions.

    Each split is a :obj:`(2, E)` long tensor of :obj:`(user, item)` pairs,
    with user ids in :math:`[0, U)` and item ids in :math:`[0, I)`.

    Args:
        name (str): The dataset's name, e.g. :obj:`"gowalla"`.
        num_users (int): :math:`U`.
        num_items (int): :math:`I`.
        train (torch.Tensor): Training pairs.
        val (torch.Tensor): Validation pairs (model selection).
        test (torch.Tensor): Test pairs (reported once, never selected on).
        source (str): Where the data came from, for reports.
        synthetic (bool, optional): A stand-in, not the named dataset.
            (default: :obj:`False`)
        val_origin (str, optional): How the validation pairs were made.
            (default: :obj:`"file"`)
    """
    name: str
    num_users: int
    num_items: int
    train: Tensor
    val: Tensor
    test: Tensor
    source: str
    synthetic: bool = False
    val_origin: str = 'file'

    @property
    def kind(self) -> str:
        r""":obj:`"synthetic"` for a stand-in, else :obj:`"real"`."""
        return 'synthetic' if self.synthetic else 'real'

    @property
    def num_nodes(self) -> int:
        return self.num_users + self.num_items

    def split(self, name: str) -> Tensor:
        r"""The pairs of split :obj:`"train"`, :obj:`"val"` or
        :obj:`"test"`."""
        if name not in ('train', 'val', 'test'):
            raise ValueError(f"'split' must be one of 'train', 'val', 'test' "
                             f"(got {name!r})")
        return getattr(self, name)

    def graph(self) -> Data:
        r"""The training interactions as an undirected homogeneous graph:
        users are nodes :math:`0..U-1`, items nodes :math:`U..U+I-1`, each
        interaction one edge in each direction."""
        return Data(edge_index=interaction_graph(self.train, self.num_users),
                    num_nodes=self.num_nodes, num_users=self.num_users,
                    num_items=self.num_items)

    def adjacency(self) -> Tensor:
        r"""The :func:`normalized_adjacency` of the training graph."""
        return normalized_adjacency(self.train, self.num_users,
                                    self.num_items)

    def describe(self) -> str:
        name = (f'a SYNTHETIC stand-in for {self.name}' if self.synthetic
                else self.name)
        return (f'{name}: {self.num_users:,} users, {self.num_items:,} items, '
                f'{self.train.size(1):,} train / {self.val.size(1):,} val '
                f'({self.val_origin}) / {self.test.size(1):,} test '
                f'interactions (from {self.source})')

    def subsample(self, num_users: int, seed: int = 0,
                  min_item_interactions: int = 1) -> 'RecSysData':
        r"""The interactions of :obj:`num_users` users drawn at random
        (reproducibly from :obj:`seed`), with ids renumbered; items with
        fewer than :obj:`min_item_interactions` training interactions among
        them are dropped with all their pairs (a denser graph that small
        models learn quickly). For quick runs: metrics are not comparable
        to those of the full data."""
        for arg, value in dict(num_users=num_users,
                               min_item_interactions=min_item_interactions
                               ).items():
            if isinstance(value, bool) or not isinstance(value, int) \
                    or value < 1:
                raise ValueError(f"'{arg}' must be a positive int (got "
                                 f"{value!r})")
        if num_users >= self.num_users and min_item_interactions == 1:
            return self
        num_users = min(num_users, self.num_users)
        gen = torch.Generator().manual_seed(seed)
        chosen = torch.randperm(self.num_users, generator=gen)[:num_users]
        user_map = torch.full((self.num_users, ), -1, dtype=torch.long)
        user_map[chosen.sort().values] = torch.arange(num_users)
        splits = {}
        for name in ('train', 'val', 'test'):
            pairs = self.split(name)
            keep = user_map[pairs[0]] >= 0
            splits[name] = torch.stack([user_map[pairs[0, keep]],
                                        pairs[1, keep]])
        counts = torch.bincount(splits['train'][1], minlength=self.num_items)
        kept_items = (counts >= min_item_interactions).nonzero().view(-1)
        item_map = torch.full((self.num_items, ), -1, dtype=torch.long)
        item_map[kept_items] = torch.arange(kept_items.numel())
        for name, pairs in splits.items():
            items = item_map[pairs[1]]
            splits[name] = torch.stack([pairs[0, items >= 0],
                                        items[items >= 0]])
        dense = (f', items with >= {min_item_interactions} of their '
                 f'interactions' if min_item_interactions > 1 else '')
        splits, kept_users = _drop_users_without_training(
            self.name, splits, num_users, log=lambda message: None)
        return replace(self, num_users=kept_users,
                       num_items=kept_items.numel(),
                       source=f'{self.source}; {num_users:,} users drawn '
                       f'with seed {seed}{dense}', **splits)


def interaction_graph(pairs: Tensor, num_users: int) -> Tensor:
    r"""The :obj:`edge_index` :math:`(2, 2E)` of :obj:`(user, item)`
    :obj:`pairs` on one node set (items shifted by :obj:`num_users`), one
    edge in each direction."""
    users, items = pairs[0], pairs[1] + num_users
    return torch.stack([torch.cat([users, items]), torch.cat([items, users])])


def normalized_adjacency(pairs: Tensor, num_users: int,
                         num_items: int) -> Tensor:
    r"""The symmetric normalized adjacency :math:`\mathbf{D}^{-1/2}
    \mathbf{A}\mathbf{D}^{-1/2}` of the interaction graph of
    :obj:`pairs` as a :obj:`torch.sparse_csr` matrix (its own transpose):
    what LightGCN propagates with, precomputed once for layers built with
    :obj:`normalize=False`."""
    num_nodes = num_users + num_items
    edge_index, weight = gcn_norm(interaction_graph(pairs, num_users), None,
                                  num_nodes, add_self_loops=False)
    with warnings.catch_warnings():  # torch's notes on beta sparse support
        warnings.filterwarnings('ignore', message='Sparse CSR tensor support')
        warnings.filterwarnings('ignore', message='Sparse invariant checks')
        return to_torch_csr_tensor(edge_index.flip(0), weight,
                                   size=(num_nodes, num_nodes))


# Reading the LightGCN text format ############################################


def read_interaction_file(path, num_users: Optional[int] = None,
                          num_items: Optional[int] = None) -> Tensor:
    r"""Reads a LightGCN-format file (one line per user:
    :obj:`uid i1 i2 ...`) into :obj:`(2, E)` pairs.

    Blank lines are skipped and a line holding only a user id is a user
    without items in this file. Raises :class:`ValueError` naming the file
    and line for a token that is not a non-negative integer, and for ids
    not below :obj:`num_users` / :obj:`num_items` when they are given.
    """
    path = Path(path)
    users: List[np.ndarray] = []
    items: List[np.ndarray] = []
    with open(path, 'r', encoding='utf-8') as f:
        for number, line in enumerate(f, 1):
            tokens = line.split()
            if not tokens:
                continue
            where = f'{path.name} line {number}'
            try:
                ids = np.array(tokens, dtype=np.int64)
            except (ValueError, OverflowError):
                bad = next(t for t in tokens if not _is_int(t))
                raise ValueError(f'{where}: {bad!r} is not an integer id; '
                                 f'expected "uid item item ..." with '
                                 f'non-negative integers ({path})') from None
            if ids.min() < 0:
                raise ValueError(f'{where}: negative id {int(ids.min())}; '
                                 f'expected non-negative integers ({path})')
            _check_range(ids[:1], num_users, 'user', where, path)
            _check_range(ids[1:], num_items, 'item', where, path)
            users.append(np.full(ids.size - 1, ids[0]))
            items.append(ids[1:])
    if not users:
        return torch.empty(2, 0, dtype=torch.long)
    return torch.from_numpy(np.stack([np.concatenate(users),
                                      np.concatenate(items)]))


def _is_int(token: str) -> bool:
    try:
        int(token)
        return True
    except ValueError:
        return False


def _check_range(ids: np.ndarray, limit: Optional[int], what: str,
                 where: str, path: Path):
    if limit is not None and ids.size and int(ids.max()) >= limit:
        raise ValueError(f'{where}: {what} id {int(ids.max())} is out of '
                         f'range; the dataset has {limit:,} {what}s '
                         f'(ids 0..{limit - 1}) ({path})')


def _count_rows(path: Path) -> Optional[int]:
    r"""Rows after the header of a :obj:`user_list.txt` / :obj:`item_list.txt`,
    or :obj:`None` without the file."""
    if not path.is_file():
        return None
    with open(path, 'r', encoding='utf-8') as f:
        return max(sum(1 for line in f if line.strip()) - 1, 0)


# Reading pickled SciPy matrices ##############################################


def _allowed_classes() -> Dict[Tuple[str, str], object]:
    import scipy.sparse as sp
    try:
        from numpy._core import multiarray
    except ImportError:  # NumPy 1
        from numpy.core import multiarray

    allowed = {
        ('numpy', 'ndarray'): np.ndarray,
        ('numpy', 'dtype'): np.dtype,
        ('numpy.core.multiarray', '_reconstruct'): multiarray._reconstruct,
        ('numpy._core.multiarray', '_reconstruct'): multiarray._reconstruct,
        ('numpy.core.multiarray', 'scalar'): multiarray.scalar,
        ('numpy._core.multiarray', 'scalar'): multiarray.scalar,
    }
    for fmt in ('coo', 'csr', 'csc'):
        for kind in ('matrix', 'array'):
            cls = getattr(sp, f'{fmt}_{kind}', None)
            if cls is None:
                continue
            for module in (f'scipy.sparse.{fmt}', f'scipy.sparse._{fmt}',
                           'scipy.sparse'):
                allowed[(module, f'{fmt}_{kind}')] = cls
    return allowed


class RefusedPickle(pickle.UnpicklingError):
    r"""A pickle named a class or function outside the allowed list."""


class SparseMatrixUnpickler(pickle.Unpickler):
    r"""An unpickler that builds only SciPy sparse matrices (COO, CSR, CSC)
    and the NumPy arrays and dtypes inside them.

    A pickle can call any importable function while it loads; this one
    resolves a class or function only if it is on that list, so a file that
    names anything else (:obj:`os.system`, ...) fails with
    :class:`pickle.UnpicklingError` before the call happens.
    """
    def find_class(self, module: str, name: str):
        allowed = _allowed_classes()
        try:
            return allowed[(module, name)]
        except KeyError:
            raise RefusedPickle(
                f'refused to load {module}.{name}: only SciPy sparse '
                f'matrices and NumPy arrays may be in a dataset pickle'
            ) from None


def read_sparse_pickle(path) -> Tuple[Tensor, Tuple[int, int]]:
    r"""Reads a pickled SciPy sparse matrix (users × items) through
    :class:`SparseMatrixUnpickler`; returns its nonzero :obj:`(2, E)`
    pairs and its shape. Raises :class:`ValueError` naming the file for
    anything else."""
    import scipy.sparse as sp

    path = Path(path)
    with open(path, 'rb') as f:
        try:
            matrix = SparseMatrixUnpickler(f).load()
        except RefusedPickle as e:
            raise ValueError(f'{path}: {e}') from None
        except Exception as e:  # truncated or corrupt stream
            raise ValueError(f'{path} is not a readable pickled sparse '
                             f'matrix ({e.__class__.__name__}: {e})') from None
    if not sp.issparse(matrix):
        raise ValueError(f'{path} holds a {type(matrix).__name__}, not a '
                         f'SciPy sparse matrix')
    try:
        coo = sp.coo_matrix(matrix)
        rows = np.asarray(coo.row, dtype=np.int64)
        cols = np.asarray(coo.col, dtype=np.int64)
        shape = tuple(int(n) for n in coo.shape)
    except Exception as e:  # inconsistent fields in a crafted file
        raise ValueError(f'{path} holds an inconsistent sparse matrix '
                         f'({e.__class__.__name__}: {e})') from None
    keep = np.asarray(coo.data) != 0
    pairs = np.stack([rows[keep], cols[keep]])
    if pairs.size and (pairs.min() < 0 or rows.max() >= shape[0]
                       or cols.max() >= shape[1]):
        raise ValueError(f'{path}: indices out of range for shape {shape}')
    return torch.from_numpy(pairs), shape


# Splits ######################################################################


def carve_validation(train: Tensor, fraction: float = 0.1,
                     seed: int = 0) -> Tuple[Tensor, Tensor]:
    r"""Moves about :obj:`fraction` of each user's training items (at least
    one for a user with two or more, never the last one) into a validation
    split, drawn reproducibly from :obj:`seed`. Returns
    :obj:`(train, val)`."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"'val_fraction' must be in (0, 1) (got {fraction})")
    gen = torch.Generator().manual_seed(seed)
    users = train[0]
    # Random order within each user: sort by (user, random key).
    key = torch.rand(users.numel(), generator=gen, dtype=torch.float64)
    order = torch.argsort(users.double() + key * 0.5)
    sorted_users = users[order]
    counts = torch.bincount(sorted_users)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(users.numel()) - starts[sorted_users]
    held = torch.floor(counts.double() * fraction + 0.5).long()
    held = torch.minimum(held.clamp(min=1), (counts - 1).clamp(min=0))
    to_val = torch.zeros(users.numel(), dtype=torch.bool)
    to_val[order] = rank < held[sorted_users]
    return train[:, ~to_val], train[:, to_val]


def _drop_users_without_training(name: str, splits: Dict[str, Tensor],
                                 num_users: int,
                                 log: Callable[[str], None]
                                 ) -> Tuple[Dict[str, Tensor], int]:
    has_train = torch.zeros(num_users, dtype=torch.bool)
    has_train[splits['train'][0]] = True
    dropped = int((~has_train).sum())
    if dropped == 0:
        return splits, num_users
    user_map = torch.full((num_users, ), -1, dtype=torch.long)
    user_map[has_train] = torch.arange(num_users - dropped)
    lost = {}
    for split, pairs in splits.items():
        users = user_map[pairs[0]]
        lost[split] = int((users < 0).sum())
        splits[split] = torch.stack([users[users >= 0],
                                     pairs[1, users >= 0]])
    log(f'[pyg_qgnn] {name}: left out {dropped:,} users with no training '
        f'interaction (and their {lost["val"]:,} validation / '
        f'{lost["test"]:,} test interactions)')
    return splits, num_users - dropped


def _unique_pairs(pairs: Tensor, num_items: int) -> Tensor:
    key = torch.unique(pairs[0] * num_items + pairs[1])
    return torch.stack([key // num_items, key % num_items])


# Finding and loading #########################################################


def find_recsys(name: str, root: Optional[str] = None) -> Optional[Path]:
    r"""The folder holding dataset :obj:`name` in either format, or
    :obj:`None`. An explicit :obj:`root` that holds none is an error."""
    def candidates(base: Path, explicit: bool) -> List[Path]:
        found = [base / name, base / name / 'raw']
        if name.lower() != name:
            found += [base / name.lower(), base / name.lower() / 'raw']
        return found + ([base, base / 'raw'] if explicit else [])

    def holds_data(folder: Path) -> bool:
        return any(all((folder / f).is_file() for f in files)
                   for files in (TEXT_FILES, PICKLE_FILES))

    if root is not None:
        for folder in candidates(Path(root), explicit=True):
            if holds_data(folder):
                return folder
        raise FileNotFoundError(
            f"'root' {root!r} holds no {name}/ folder with train.txt and "
            f"test.txt (LightGCN format) or trnMat.pkl and tstMat.pkl")
    env = os.environ.get('PYG_QGNN_DATA')
    for base in ([Path(env)] if env else []) + shared_data_candidates():
        for folder in candidates(base, explicit=False):
            if holds_data(folder):
                return folder
    return None


def load_recsys(name: str = 'gowalla', root: Optional[str] = None,
                val_fraction: float = 0.1, seed: int = 0,
                allow_download: bool = True, allow_synthetic: bool = True,
                log: Callable[[str], None] = print) -> RecSysData:
    r"""Loads a recommendation dataset by name (see the module docstring
    for where and in which formats).

    Args:
        name (str, optional): The dataset folder's name, e.g.
            :obj:`"gowalla"` or :obj:`"lightgnn_yelp"`.
            (default: :obj:`"gowalla"`)
        root (str, optional): A folder holding :obj:`<name>/` (or the
            dataset's files themselves); if given and it does not, an error
            is raised. (default: :obj:`None`)
        val_fraction (float, optional): Share of each user's training items
            moved to validation when the data has no validation split.
            (default: :obj:`0.1`)
        seed (int, optional): Seed of that split. (default: :obj:`0`)
        allow_download (bool, optional): Without :obj:`root` or a local
            copy, download :obj:`"gowalla"`, :obj:`"yelp2018"` or
            :obj:`"amazon-book"` from the LightGCN repository
            (:mod:`~pyg_qgnn.datasets.lightgcn_download`).
            (default: :obj:`True`)
        allow_synthetic (bool, optional): Without data, return an announced
            synthetic stand-in (:func:`synthetic_interactions`) instead of
            raising. (default: :obj:`True`)
        log (callable, optional): Where announcements go.
            (default: :obj:`print`)
    """
    folder = find_recsys(name, root)
    if folder is None and allow_download:
        try:
            folder = download_lightgcn(name, log)
        except Exception as e:  # any network failure: go on
            log(f'[pyg_qgnn] could not download {name} '
                f'({e.__class__.__name__}: {e})')
    if folder is None:
        if not allow_synthetic:
            raise FileNotFoundError(f'no local copy of {name}; set '
                                    f'$PYG_QGNN_DATA or pass root')
        log(f'[pyg_qgnn] *** {name} is not available offline: using a '
            f'SYNTHETIC stand-in (clustered users and items). Metrics are '
            f'not comparable to {name}. ***')
        return synthetic_interactions(name=name, val_fraction=val_fraction,
                                      seed=seed)
    if all((folder / f).is_file() for f in TEXT_FILES):
        splits, num_users, num_items = _read_text_splits(folder)
    else:
        splits, num_users, num_items = _read_pickle_splits(folder)
    splits = {k: _unique_pairs(v, max(num_items, 1))
              for k, v in splits.items()}
    val_origin = 'file'
    if 'val' not in splits:
        splits['train'], splits['val'] = carve_validation(
            splits['train'], val_fraction, seed)
        val_origin = (f'{val_fraction:g} of each user\'s training items, '
                      f'seed {seed}')
    splits, num_users = _drop_users_without_training(name, splits, num_users,
                                                     log)
    return RecSysData(name, num_users, num_items, splits['train'],
                      splits['val'], splits['test'], source=str(folder),
                      val_origin=val_origin)


def _read_text_splits(folder: Path):
    num_users = _count_rows(folder / 'user_list.txt')
    num_items = _count_rows(folder / 'item_list.txt')
    splits = {split: read_interaction_file(folder / f'{split}.txt',
                                           num_users, num_items)
              for split in ('train', 'test')}
    if num_users is None or num_items is None:
        both = torch.cat(list(splits.values()), dim=1)
        bounds = both.max(dim=1).values + 1 if both.numel() else \
            torch.zeros(2, dtype=torch.long)
        num_users = num_users if num_users is not None else int(bounds[0])
        num_items = num_items if num_items is not None else int(bounds[1])
    return splits, num_users, num_items


def _read_pickle_splits(folder: Path):
    files = {'train': 'trnMat.pkl', 'val': 'valMat.pkl', 'test': 'tstMat.pkl'}
    splits, shapes = {}, {}
    for split, file in files.items():
        if (folder / file).is_file():
            splits[split], shapes[split] = read_sparse_pickle(folder / file)
    if len(set(shapes.values())) != 1:
        raise ValueError(f'{folder}: the matrices have different shapes '
                         f'{shapes}; expected users x items in every split')
    num_users, num_items = shapes['train']
    return splits, num_users, num_items


# Offline stand-in ############################################################


def synthetic_interactions(num_users: int = 2000, num_items: int = 3000,
                           items_per_user: int = 30, num_clusters: int = 20,
                           test_fraction: float = 0.2,
                           val_fraction: float = 0.1, seed: int = 0,
                           name: str = 'synthetic') -> RecSysData:
    r"""Users and items in :obj:`num_clusters` taste clusters: each user
    draws about :obj:`items_per_user` items, 80% from its own cluster (with
    Zipf-like popularity), the rest from anywhere. Each user's items are
    split into train and test (:obj:`test_fraction`), and validation is
    carved from train. Learnable by a recommender, but not a benchmark."""
    gen = torch.Generator().manual_seed(seed)
    user_cluster = torch.randint(num_clusters, (num_users, ), generator=gen)
    item_cluster = torch.randint(num_clusters, (num_items, ), generator=gen)
    popularity = 1.0 / torch.arange(1, num_items + 1).double() ** 0.8
    popularity = popularity[torch.randperm(num_items, generator=gen)]
    users, items = [], []
    for cluster in range(num_clusters):
        members = (user_cluster == cluster).nonzero().view(-1)
        if members.numel() == 0:
            continue
        own = popularity * (item_cluster == cluster) * 4 + popularity * 0.25
        picks = torch.multinomial(own.expand(members.numel(), -1),
                                  items_per_user, replacement=False,
                                  generator=gen)
        users.append(members.repeat_interleave(items_per_user))
        items.append(picks.reshape(-1))
    pairs = torch.stack([torch.cat(users), torch.cat(items)])
    rest, test = carve_validation(pairs, test_fraction, seed + 1)
    train, val = carve_validation(rest, val_fraction, seed)
    return RecSysData(name, num_users, num_items, train, val, test,
                      source='synthetic clustered interactions',
                      synthetic=True,
                      val_origin=f'{val_fraction:g} of each user\'s '
                      f'training items, seed {seed}')
