r"""Data loading with offline defaults."""
from pyg_qgnn.datasets.planetoid import LoadedGraph, load_planetoid
from pyg_qgnn.datasets.synthetic import contextual_sbm

__all__ = ['load_planetoid', 'LoadedGraph', 'contextual_sbm']
