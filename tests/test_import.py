r"""The package must import and work without the optional compiled extras."""
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_without_torch_scatter_and_torch_sparse():
    code = textwrap.dedent('''
        import sys

        class BlockExtras:  # make `import torch_scatter` fail like a missing package
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in ('torch_scatter', 'torch_sparse'):
                    raise ModuleNotFoundError(f'No module named {name!r}')

        sys.meta_path.insert(0, BlockExtras())
        import torch
        import torch_geometric.typing as typing
        assert not typing.WITH_TORCH_SCATTER and not typing.WITH_TORCH_SPARSE
        import pyg_qgnn
        from torch_geometric.nn.models import GCN
        model = pyg_qgnn.quantize_model(GCN(8, 16, 2, 3), pyg_qgnn.QAT(bits=4))
        x = torch.randn(10, 8)
        edge_index = torch.randint(0, 10, (2, 40))
        out = model(x, edge_index)
        out.sum().backward()
        assert out.shape == (10, 3) and bool(torch.isfinite(out).all())
        assert 'torch_scatter' not in sys.modules
        assert 'torch_sparse' not in sys.modules
        print('ok')
    ''')
    result = subprocess.run([sys.executable, '-c', code], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith('ok')


def test_public_api_is_explicit():
    import pyg_qgnn
    for name in pyg_qgnn.__all__:
        assert hasattr(pyg_qgnn, name), name
    assert 'quantize_model' in pyg_qgnn.__all__
