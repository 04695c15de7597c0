r"""From a quantization-aware model to what ships: packed codes, safe files."""
from pyg_qgnn.deploy.serialize import load, save

__all__ = ['save', 'load']
