r"""MoleculeNet CSV files (BBBP: ``num,name,p_np,smiles``) as PyG graphs
through :func:`torch_geometric.utils.from_smiles`, which needs RDKit
(``pip install "pyg_qgnn[chem]"``).

Lookup order for :obj:`<root>/bbbp/BBBP.csv` (or :obj:`<root>/BBBP.csv`):
an explicit :obj:`root`, :obj:`$PYG_QGNN_DATA`, the project's
:obj:`../shared/data`. SMILES that RDKit cannot sanitise are dropped (as
PyG's :class:`~torch_geometric.datasets.MoleculeNet` does) and counted in
the log.
"""
import csv
import os
from pathlib import Path
from typing import Callable, List, Optional

import torch

from pyg_qgnn.datasets.locate import shared_data_candidates
from pyg_qgnn.datasets.tu import GraphList, LoadedDataset

#: Name -> (file name, label column).
MOLECULE_SETS = {'BBBP': ('BBBP.csv', 'p_np')}


def _candidates(name: str, root: Optional[str]) -> List[Path]:
    file_name = MOLECULE_SETS[name][0]
    roots = [Path(root)] if root is not None else (
        ([Path(os.environ['PYG_QGNN_DATA'])] if os.environ.get(
            'PYG_QGNN_DATA') else []) + shared_data_candidates())
    return [r / sub / file_name for r in roots for sub in (name.lower(), '')]


def load_molecules(name: str = 'BBBP', root: Optional[str] = None,
                   log: Callable[[str], None] = print) -> LoadedDataset:
    r"""Loads a MoleculeNet CSV as a graph-classification dataset with
    float node features (RDKit's 9 categorical atom features, as numbers).

    Args:
        name (str, optional): :obj:`"BBBP"`. (default: :obj:`"BBBP"`)
        root (str, optional): A folder holding :obj:`bbbp/BBBP.csv` or
            :obj:`BBBP.csv`. (default: :obj:`None`)
        log (callable, optional): Where announcements go. (default: :obj:`print`)
    """
    name = name.upper()
    if name not in MOLECULE_SETS:
        raise ValueError(f"'dataset' must be one of {sorted(MOLECULE_SETS)} "
                         f"(got {name!r})")
    path = next((p for p in _candidates(name, root) if p.is_file()), None)
    if path is None:
        where = f"'root' {root!r}" if root is not None else \
            '$PYG_QGNN_DATA or ../shared/data'
        raise FileNotFoundError(f'{where} holds no {name.lower()}/'
                                f'{MOLECULE_SETS[name][0]}')
    try:
        from rdkit import RDLogger
        from torch_geometric.utils import from_smiles
    except ImportError:
        raise ImportError(f'{name} needs RDKit to read SMILES: '
                          f'pip install "pyg_qgnn[chem]"') from None
    RDLogger.DisableLog('rdApp.*')  # one summary line instead
    label = MOLECULE_SETS[name][1]
    graphs, dropped = [], 0
    with open(path, newline='') as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            try:
                y = int(row[label])
                graph = from_smiles(row['smiles'])
            except (KeyError, ValueError, TypeError) as e:
                raise ValueError(f'{path}:{line}: malformed row ({e})') from None
            except Exception:  # RDKit's own errors: unparsable SMILES
                dropped += 1
                continue
            if graph.num_nodes == 0:
                dropped += 1
                continue
            graph.x = graph.x.float()
            graph.edge_attr = None
            graph.y = torch.tensor([y])
            graphs.append(graph)
    if dropped:
        log(f'[pyg_qgnn] {name}: dropped {dropped} molecules RDKit could not '
            f'parse')
    return LoadedDataset(GraphList(graphs), source=str(path))
