r"""Data loading with offline defaults."""
from pyg_qgnn.datasets.modelnet import (
    LoadedPointClouds,
    load_modelnet40,
    synthetic_shapes,
)
from pyg_qgnn.datasets.molecules import load_molecules
from pyg_qgnn.datasets.ogb_synthetic import write_synthetic_ogb
from pyg_qgnn.datasets.ogbn import LoadedOGB, load_ogbn
from pyg_qgnn.datasets.planetoid import LoadedGraph, load_planetoid
from pyg_qgnn.datasets.recsys import RecSysData, load_recsys
from pyg_qgnn.datasets.synthetic import contextual_sbm
from pyg_qgnn.datasets.tu import (
    LoadedDataset,
    load_tudataset,
    synthetic_graph_classes,
)

__all__ = [
    'load_planetoid',
    'LoadedGraph',
    'contextual_sbm',
    'load_tudataset',
    'LoadedDataset',
    'synthetic_graph_classes',
    'load_molecules',
    'load_recsys',
    'RecSysData',
    'load_modelnet40',
    'LoadedPointClouds',
    'synthetic_shapes',
    'load_ogbn',
    'LoadedOGB',
    'write_synthetic_ogb',
]
