r"""ModelNet40 point clouds (`Wu et al., 2015
<https://arxiv.org/abs/1406.5670>`_) from either layout users have, and a
synthetic shape set for offline use.

* **PyG's** :class:`~torch_geometric.datasets.ModelNet` **layout**, what
  :obj:`ModelNet(root, "40")` downloads: :obj:`ModelNet40/raw/<class>/
  {train,test}/<class>_NNNN.off` meshes; :obj:`points` points are sampled on
  each mesh in proportion to face area
  (:class:`~torch_geometric.transforms.SamplePoints`, seeded).
* **PointNet++'s** :obj:`modelnet40_normal_resampled` **layout**
  (`Qi et al., 2017 <https://arxiv.org/abs/1706.02413>`_):
  :obj:`modelnet40_shape_names.txt` and :obj:`<class>/<class>_NNNN.txt`
  rows of :obj:`x,y,z,nx,ny,nz`; the first :obj:`points` rows of each file
  are read, as the standard loaders do. The split comes from
  :obj:`modelnet40_{train,test}.txt` when they list every shape present;
  otherwise (a subset) it is inferred from the shape number: ModelNet40
  numbers the training shapes of each class before its test shapes
  (:data:`MODELNET40_TRAIN_COUNTS`, 9,843 / 2,468).

Lookup order: an explicit :obj:`root`, :obj:`$PYG_QGNN_DATA`, the
project's :obj:`../shared/data`; in each, :obj:`ModelNet40/raw/`,
:obj:`raw/`, :obj:`ModelNet40/` or the folder itself (PyG, or the unpacked
archive) and the folder itself or a
:obj:`modelnet40_normal_resampled*/` folder in it (PointNet++). There is
no automatic download (the archives are 0.4 to 2 GB). Every cloud is
centred and scaled into the unit sphere. The sampled clouds are cached
(:obj:`$PYG_QGNN_CACHE/modelnet`, safetensors), never written into the data
folder. Offline and without data, :func:`load_modelnet40` returns an
announced synthetic stand-in (:func:`synthetic_shapes`).
"""
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor
from torch_geometric.data import Data

from pyg_qgnn.datasets import locate

#: The 40 classes in the standard label order.
MODELNET40_CLASSES = (
    'airplane', 'bathtub', 'bed', 'bench', 'bookshelf', 'bottle', 'bowl',
    'car', 'chair', 'cone', 'cup', 'curtain', 'desk', 'door', 'dresser',
    'flower_pot', 'glass_box', 'guitar', 'keyboard', 'lamp', 'laptop',
    'mantel', 'monitor', 'night_stand', 'person', 'piano', 'plant', 'radio',
    'range_hood', 'sink', 'sofa', 'stairs', 'stool', 'table', 'tent',
    'toilet', 'tv_stand', 'vase', 'wardrobe', 'xbox')

#: Training shapes per class of the official split: shapes 1..count of a
#: class are training shapes, the rest test shapes.
MODELNET40_TRAIN_COUNTS = dict(zip(MODELNET40_CLASSES, (
    626, 106, 515, 173, 572, 335, 64, 197, 889, 167, 79, 138, 200, 109, 200,
    149, 171, 155, 145, 124, 149, 284, 465, 200, 88, 231, 240, 104, 115, 128,
    680, 124, 90, 392, 163, 344, 267, 475, 87, 103)))

SHAPE_NAMES_FILE = 'modelnet40_shape_names.txt'
SYNTHETIC_CLASSES = ('sphere', 'cube', 'cylinder', 'cone', 'torus', 'plane',
                     'tetrahedron', 'dumbbell')
_CACHE_VERSION = '1'
_SHAPE_ID = re.compile(r'^(.+)_(\d+)$')


@dataclass
class LoadedPointClouds:
    r"""Point clouds :obj:`Data(pos=(points, 3), y=(1,))` split into
    training and test shapes, with where they came from."""
    train: List[Data]
    test: List[Data]
    class_names: List[str]
    source: str  # where it came from, for the report
    split: str  # how train and test were decided
    synthetic: bool = False
    name: str = 'ModelNet40'

    @property
    def kind(self) -> str:
        r""":obj:`"synthetic"` for a stand-in, else :obj:`"real"`."""
        return 'synthetic' if self.synthetic else 'real'

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_points(self) -> int:
        return self.train[0].pos.size(0) if self.train else 0

    def describe(self) -> str:
        r"""One line: name, sizes, source and split."""
        name = self.name if not self.synthetic else \
            f'a SYNTHETIC stand-in for {self.name}'
        present = len({int(d.y) for d in self.train + self.test})
        return (f'{name}: {len(self.train)} training and {len(self.test)} '
                f'test shapes of {self.num_points} points, {present} of '
                f'{self.num_classes} classes present (from {self.source}); '
                f'split: {self.split}')


def normalize_unit_sphere(pos: Tensor) -> Tensor:
    r"""Centres a cloud :math:`(P, 3)` on its centroid and scales it so that
    its farthest point lies on the unit sphere (PointNet++'s
    :obj:`pc_normalize`); a single repeated point stays at the origin."""
    pos = pos - pos.mean(dim=0, keepdim=True)
    radius = pos.norm(dim=1).max() if pos.numel() else pos.new_zeros(())
    return pos / radius if float(radius) > 0 else pos


def load_modelnet40(root: Optional[str] = None, points: int = 1024,
                    seed: int = 0, allow_synthetic: bool = True,
                    log: Callable[[str], None] = print
                    ) -> LoadedPointClouds:
    r"""Loads ModelNet40 point clouds (see the module notes for layouts and
    lookup).

    Args:
        root (str, optional): A folder holding either layout; if given and
            it holds neither, an error is raised. (default: :obj:`None`)
        points (int, optional): Points per shape. (default: :obj:`1024`)
        seed (int, optional): Seed of the sampling on meshes (PyG layout)
            and of the synthetic shapes. (default: :obj:`0`)
        allow_synthetic (bool, optional): Without data, return the announced
            stand-in of :func:`synthetic_shapes` instead of raising.
            (default: :obj:`True`)
        log (callable, optional): Where announcements go.
            (default: :obj:`print`)
    """
    if isinstance(points, bool) or not isinstance(points, int) or points < 1:
        raise ValueError(f"'points' must be a positive int (got {points!r})")
    found = find_modelnet40(root)
    if found is None:
        if not allow_synthetic:
            raise FileNotFoundError('no local copy of ModelNet40; set '
                                    '$PYG_QGNN_DATA or pass root')
        log(f'[pyg_qgnn] *** ModelNet40 is not available offline: using a '
            f'SYNTHETIC stand-in ({len(SYNTHETIC_CLASSES)} parametric shape '
            f'classes with noise). Accuracies are not comparable to '
            f'ModelNet40. ***')
        return synthetic_shapes(points=points, seed=seed)
    layout, folder = found
    files = _mesh_files(folder) if layout == 'pyg' else \
        _resampled_files(folder)
    if not files:
        raise FileNotFoundError(f'{folder} holds no ModelNet40 shapes')
    pos, y, train, class_names, split = _cached(
        layout, folder, files, points, seed, log)
    clouds = [Data(pos=p, y=label.view(1)) for p, label in zip(pos, y)]
    return LoadedPointClouds(
        train=[c for c, t in zip(clouds, train) if t],
        test=[c for c, t in zip(clouds, train) if not t],
        class_names=class_names, source=str(folder), split=split)


def find_modelnet40(root: Optional[str] = None
                    ) -> Optional[Tuple[str, Path]]:
    r""":obj:`("pyg", raw folder)` or :obj:`("resampled", folder)` of the
    first ModelNet40 copy in the lookup order, or :obj:`None`. An explicit
    :obj:`root` without one is an error."""
    if root is not None:
        found = _find_in(Path(root))
        if found is None:
            raise FileNotFoundError(
                f"'root' {root!r} holds no ModelNet40: expected "
                f"ModelNet40/raw/<class>/train/*.off (PyG's ModelNet layout) "
                f"or {SHAPE_NAMES_FILE} beside <class>/<class>_NNNN.txt "
                f"(modelnet40_normal_resampled)")
        return found
    env = os.environ.get('PYG_QGNN_DATA')
    for base in ([Path(env)] if env else []) + \
            locate.shared_data_candidates():
        found = _find_in(base)
        if found is not None:
            return found
    return None


def _find_in(base: Path) -> Optional[Tuple[str, Path]]:
    # PyG renames the archive's ModelNet40/ folder to raw/; keep both.
    for raw in (base / 'ModelNet40' / 'raw', base / 'raw',
                base / 'ModelNet40', base):
        if _holds_meshes(raw):
            return 'pyg', raw
    candidates = [base] + (sorted(base.glob('modelnet40_normal_resampled*'))
                           if base.is_dir() else [])
    for folder in candidates:
        if (folder / SHAPE_NAMES_FILE).is_file():
            return 'resampled', folder
    return None


def _holds_meshes(folder: Path) -> bool:
    r"""Whether :obj:`folder` has :obj:`<class>/{train,test}/*.off`."""
    if not folder.is_dir():
        return False
    return any(next((c / split).glob('*.off'), None) is not None
               for c in folder.iterdir() if c.is_dir()
               for split in ('train', 'test'))


# Reading #####################################################################

# (class name, shape number, path, is a training shape or None if unknown)
ShapeFile = Tuple[str, int, Path, Optional[bool]]


def _mesh_files(raw: Path) -> List[ShapeFile]:
    files = []
    for class_dir in sorted(p for p in raw.iterdir() if p.is_dir()):
        for split in ('train', 'test'):
            for path in sorted((class_dir / split).glob('*.off')):
                number = _shape_number(path.stem, class_dir.name)
                files.append((class_dir.name, number, path, split == 'train'))
    return files


def _resampled_files(folder: Path) -> List[ShapeFile]:
    names = _read_lines(folder / SHAPE_NAMES_FILE)
    files = []
    for name in names:
        for path in sorted((folder / name).glob(f'{name}_*.txt')):
            files.append((name, _shape_number(path.stem, name), path, None))
    return files


def _shape_number(stem: str, class_name: str) -> int:
    match = _SHAPE_ID.match(stem)
    if match is None or match.group(1) != class_name:
        raise ValueError(f"'{stem}' is not named <class>_<number> for class "
                         f"'{class_name}'")
    return int(match.group(2))


def _read_lines(path: Path) -> List[str]:
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def _class_names(layout: str, folder: Path,
                 files: List[ShapeFile]) -> List[str]:
    if layout == 'resampled':
        return _read_lines(folder / SHAPE_NAMES_FILE)
    present = sorted({name for name, *_ in files})
    # A subset of ModelNet40 keeps the standard labels; other meshes are
    # labelled in sorted order, as PyG's ModelNet does.
    return list(MODELNET40_CLASSES) if set(present) <= set(
        MODELNET40_CLASSES) else present


def _split(layout: str, folder: Path,
           files: List[ShapeFile]) -> Tuple[List[bool], str]:
    r"""Whether each shape is a training shape, and how that was decided."""
    if layout == 'pyg':
        return [bool(train) for *_, train in files], \
            'official (train/ and test/ folders)'
    ids = [f'{name}_{number:04d}' for name, number, *_ in files]
    lists = [folder / f'modelnet40_{s}.txt' for s in ('train', 'test')]
    if all(path.is_file() for path in lists):
        train_ids, test_ids = (set(_read_lines(path)) for path in lists)
        if all((i in train_ids) != (i in test_ids) for i in ids):
            return [i in train_ids for i in ids], \
                'official (modelnet40_train.txt / modelnet40_test.txt)'
    unknown = sorted({name for name, *_ in files} -
                     set(MODELNET40_TRAIN_COUNTS))
    if unknown:
        raise ValueError(f'{folder}: no split files list every shape, and '
                         f'classes {unknown} are not ModelNet40 classes whose '
                         f'split could be inferred')
    return ([number <= MODELNET40_TRAIN_COUNTS[name]
             for name, number, *_ in files],
            'official, inferred from the shape numbers (the split files do '
            'not list every shape present)')


def _read_cloud(layout: str, path: Path, points: int) -> Tensor:
    if layout == 'pyg':
        from torch_geometric.io import read_off
        from torch_geometric.transforms import SamplePoints

        mesh = read_off(str(path))
        if mesh.face is None or mesh.face.numel() == 0:
            raise ValueError(f'{path}: the mesh has no faces to sample')
        return SamplePoints(points)(mesh).pos
    rows = np.loadtxt(path, delimiter=',', max_rows=points, usecols=(0, 1, 2),
                      dtype=np.float32, ndmin=2)
    if rows.shape[0] < points:
        raise ValueError(f"'points' must be at most {rows.shape[0]} for "
                         f"{path}, which has {rows.shape[0]} points "
                         f"(got {points})")
    return torch.from_numpy(rows)


def _cached(layout: str, folder: Path, files: List[ShapeFile], points: int,
            seed: int, log: Callable[[str], None]):
    r"""Reads (or loads from the cache) the normalized clouds
    :math:`(N, P, 3)`, labels, training flags, class names and split."""
    listing = [(str(path.relative_to(folder)), path.stat().st_size)
               for *_, path, _ in files]
    key = json.dumps([_CACHE_VERSION, layout, str(folder.resolve()), points,
                      seed if layout == 'pyg' else None, listing])
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    path = locate.cache_root() / 'modelnet' / \
        f'{layout}-{points}-{digest}.safetensors'
    if path.is_file():
        try:
            with safe_open(str(path), framework='pt') as f:
                meta = f.metadata()
            tensors = load_file(str(path))
            return (tensors['pos'], tensors['y'], tensors['train'].tolist(),
                    json.loads(meta['class_names']), meta['split'])
        except (SafetensorError, OSError, KeyError, ValueError):
            pass  # a broken cache entry is rebuilt below
    class_names = _class_names(layout, folder, files)
    labels = {name: i for i, name in enumerate(class_names)}
    train, split = _split(layout, folder, files)
    log(f'[pyg_qgnn] reading {len(files)} ModelNet40 shapes from {folder} '
        f'(once; cached in {path.parent})')
    with torch.random.fork_rng():  # SamplePoints draws from the global RNG
        torch.manual_seed(seed)
        pos = torch.stack([
            normalize_unit_sphere(_read_cloud(layout, p, points))
            for _, _, p, _ in files])
    y = torch.tensor([labels[name] for name, *_ in files])
    flags = torch.tensor(train, dtype=torch.bool)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_suffix(f'.{os.getpid()}.tmp')
    save_file(dict(pos=pos.contiguous(), y=y, train=flags), str(scratch),
              metadata=dict(class_names=json.dumps(class_names), split=split))
    os.replace(scratch, path)  # atomic: concurrent readers see whole files
    return pos, y, train, class_names, split


# Synthetic stand-in ##########################################################


def _surface(name: str, n: int, gen: torch.Generator) -> Tensor:
    r""":obj:`n` points on the surface of a unit-size parametric shape."""
    def uniform(*shape):
        return torch.rand(*shape, generator=gen)

    if name == 'sphere':
        pos = torch.randn(n, 3, generator=gen)
        return pos / pos.norm(dim=1, keepdim=True)
    if name == 'cube':
        pos = uniform(n, 3) * 2 - 1
        axis = torch.randint(3, (n, ), generator=gen)
        side = torch.randint(2, (n, ), generator=gen).float() * 2 - 1
        pos[torch.arange(n), axis] = side
        return pos
    if name in ('cylinder', 'cone'):
        angle, height = uniform(n) * 2 * math.pi, uniform(n)
        radius = torch.ones(n) if name == 'cylinder' else 1 - height
        return torch.stack([radius * angle.cos(), radius * angle.sin(),
                            2 * height - 1], dim=1)
    if name == 'torus':
        u, v = uniform(n) * 2 * math.pi, uniform(n) * 2 * math.pi
        ring = 1 + 0.35 * v.cos()
        return torch.stack([ring * u.cos(), ring * u.sin(), 0.35 * v.sin()],
                           dim=1)
    if name == 'plane':
        pos = uniform(n, 3) * 2 - 1
        pos[:, 2] = 0
        return pos
    if name == 'tetrahedron':
        corners = torch.tensor([[1., 1, 1], [1, -1, -1], [-1, 1, -1],
                                [-1, -1, 1]])
        faces = torch.tensor([[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]])
        a, b = uniform(n, 1), uniform(n, 1)
        flip = (a + b) > 1  # fold the square onto the triangle
        a, b = torch.where(flip, 1 - a, a), torch.where(flip, 1 - b, b)
        tri = corners[faces[torch.randint(4, (n, ), generator=gen)]]
        return tri[:, 0] + a * (tri[:, 1] - tri[:, 0]) + b * (tri[:, 2] -
                                                              tri[:, 0])
    if name == 'dumbbell':
        pos = torch.randn(n, 3, generator=gen)
        pos = 0.5 * pos / pos.norm(dim=1, keepdim=True)
        pos[:, 0] += torch.where(uniform(n) < 0.5, -0.8, 0.8)
        return pos
    raise ValueError(f"unknown synthetic shape {name!r}")


def synthetic_shapes(points: int = 1024, train_per_class: int = 24,
                     test_per_class: int = 8, noise: float = 0.02,
                     seed: int = 0) -> LoadedPointClouds:
    r"""Point clouds of :data:`SYNTHETIC_CLASSES` parametric shapes (sphere,
    cube, cylinder, cone, torus, plane, tetrahedron, dumbbell), each
    stretched by a random factor in :math:`[0.7, 1.3]` per axis, rotated at
    random about the vertical axis, perturbed by Gaussian noise of standard
    deviation :obj:`noise` and normalized into the unit sphere. Learnable by
    DGCNN in a few epochs; not a benchmark."""
    for name, value in dict(points=points, train_per_class=train_per_class,
                            test_per_class=test_per_class).items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"'{name}' must be a positive int "
                             f"(got {value!r})")
    gen = torch.Generator().manual_seed(seed)
    splits: Dict[bool, List[Data]] = {True: [], False: []}
    for label, name in enumerate(SYNTHETIC_CLASSES):
        for i in range(train_per_class + test_per_class):
            pos = _surface(name, points, gen)
            pos = pos * (0.7 + 0.6 * torch.rand(3, generator=gen))
            angle = float(torch.rand(1, generator=gen)) * 2 * math.pi
            c, s = math.cos(angle), math.sin(angle)
            rotation = torch.tensor([[c, -s, 0.], [s, c, 0.], [0., 0., 1.]])
            pos = pos @ rotation.t() + noise * torch.randn(
                points, 3, generator=gen)
            splits[i < train_per_class].append(Data(
                pos=normalize_unit_sphere(pos), y=torch.tensor([label])))
    return LoadedPointClouds(
        train=splits[True], test=splits[False],
        class_names=list(SYNTHETIC_CLASSES),
        source='synthetic parametric shapes',
        split=f'synthetic ({train_per_class} train / {test_per_class} test '
        f'per class)', synthetic=True)
