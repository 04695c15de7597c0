import importlib.util
import json
import os
import sys

import pytest
import torch
import torch_geometric.typing
from torch_geometric.nn.models import GraphSAGE

from pyg_qgnn import cli, deploy
from pyg_qgnn.train.distributed import DistributedContext
from tests.examples.conftest import (
    EXAMPLES,
    assert_one_line_error,
    assert_parse_error,
    load_example,
    run_example,
)

SCRIPT = 'ogbn_products_binsage.py'
#: 300 nodes: 24 train, 6 validation nodes; 100 features, 47 classes.
TINY = ['--synthetic-nodes', '300', '--epochs', '2', '--hidden', '16',
        '--layers', '2', '--fanout', '5,5', '--batch-size', '16',
        '--eval-batch-size', '64', '--no-progress']

needs_sampler = pytest.mark.skipif(
    not (torch_geometric.typing.WITH_PYG_LIB
         or torch_geometric.typing.WITH_TORCH_SPARSE),
    reason='NeighborLoader needs pyg-lib or torch_sparse')


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.delenv('PYG_QGNN_DATA', raising=False)
    monkeypatch.setattr('pyg_qgnn.datasets.locate.shared_data_candidates',
                        lambda: [])
    for key in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK'):
        monkeypatch.delenv(key, raising=False)


def run_main(*args):
    module = load_example(SCRIPT)
    return module.main(module.build_parser().parse_args(list(args)))


@needs_sampler
def test_sage_then_binsage_distilled_from_it(tmp_path, offline, capsys):
    teacher, rows_path = tmp_path / 'sage.safetensors', tmp_path / 'rows.json'
    rows = run_main(*TINY, '--model', 'sage', '--save', str(teacher),
                    '--json', str(rows_path))
    out = capsys.readouterr().out
    assert 'SYNTHETIC' in out and '| GraphSAGE | 1 |' in out
    assert json.loads(rows_path.read_text())[0]['test_acc'] == \
        rows[0]['test_acc']
    row = rows[0]
    assert (row['model'], row['dataset'], row['source'], row['processes']) \
        == ('GraphSAGE', 'ogbn-products', 'synthetic', 1)
    assert 1 <= row['selected_epoch'] <= 2 and len(row['history']) == 2
    assert all(0 <= row[k] <= 1 for k in ('train_acc', 'valid_acc',
                                          'test_acc', 'val_acc_sampled'))
    assert row['file_bytes'] == teacher.stat().st_size
    assert '24 train / 6 valid / 270 test' in row['split']

    plot = ['--plot', str(tmp_path / 'curves.png')] \
        if importlib.util.find_spec('matplotlib') else []
    rows = run_main(*TINY, '--model', 'binsage', '--distill', str(teacher),
                    *plot)
    out = capsys.readouterr().out
    assert 'teacher' in out and '| BinGraphSAGE (distilled) | 1 |' in out
    assert rows[0]['distill'] == str(teacher)
    if 'BinSAGEConv' in deploy.deployable_layers():
        assert rows[0]['deployed_equal'] is True
    if plot:
        assert (tmp_path / 'curves.png').stat().st_size > 0


@needs_sampler
def test_teacher_of_another_shape_is_a_clear_error(tmp_path, offline,
                                                   capsys):
    teacher = tmp_path / 'small.safetensors'
    deploy.save(GraphSAGE(100, 8, 2, 47), teacher)
    module = load_example(SCRIPT)
    status = cli.run(module.main, module.build_parser(),
                     TINY + ['--model', 'binsage', '--distill', str(teacher)],
                     exit=False)
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: argument --distill: ')
    assert 'shape' in err[0] and '--hidden 16' in err[0]


@needs_sampler
def test_more_processes_than_training_nodes_is_a_clear_error(
        offline, monkeypatch, capsys):
    module = load_example(SCRIPT)

    def forty_processes(device):
        # Rank 0 of 40 (no process group: it fails before any collective).
        return DistributedContext(rank=0, world_size=40)

    monkeypatch.setattr(module.distributed, 'init_distributed',
                        forty_processes)
    status = cli.run(module.main, module.build_parser(), TINY, exit=False)
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith('error: argument --nproc_per_node: 40 '
                             'processes') and '24 training nodes' in err[0]


@needs_sampler
def test_two_processes_with_torchrun(tmp_path, offline):
    rows_path = tmp_path / 'rows.json'
    import subprocess
    result = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--standalone',
         '--nproc_per_node=2', str(EXAMPLES / SCRIPT), *TINY,
         '--model', 'sage', '--json', str(rows_path)],
        cwd=EXAMPLES.parent, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count('| GraphSAGE | 2 |') == 1  # rank 0 only
    rows = json.loads(rows_path.read_text())
    assert len(rows) == 1 and rows[0]['processes'] == 2


def test_help_says_what_it_measures():
    result = run_example(SCRIPT, '--help')
    assert result.returncode == 0
    assert 'Columns:' in result.stdout and 'torchrun' in result.stdout
    assert ':class:' not in result.stdout


def test_fanout_of_another_length_than_the_layers(capsys):
    module = load_example(SCRIPT)
    status = cli.run(module.main, module.build_parser(),
                     ['--fanout', '15,10', '--layers', '3'], exit=False)
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: argument --fanout: ')
    assert '2 given' in err[0] and '3 layers' in err[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason='CUDA is available')
def test_cuda_without_a_gpu(capsys):
    module = load_example(SCRIPT)
    status = cli.run(module.main, module.build_parser(),
                     ['--device', 'cuda'], exit=False)
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: argument --device: ')


def test_save_deployed_needs_binsage(capsys):
    module = load_example(SCRIPT)
    status = cli.run(module.main, module.build_parser(),
                     ['--model', 'sage', '--save-deployed', 'x.safetensors'],
                     exit=False)
    assert status == 2
    assert '--save-deployed' in capsys.readouterr().err


@pytest.mark.parametrize('args,argument', [
    (['--fanout', 'a,b'], '--fanout'),
    (['--fanout', '15,0,5'], '--fanout'),
    (['--model', 'gat'], '--model'),
    (['--epochs', '0'], '--epochs'),
    (['--alpha', '2'], '--alpha'),
    (['--device', 'tpu'], '--device'),
    (['--root', '/nonexistent'], '--root'),
    (['--distill', '/nonexistent.safetensors'], '--distill'),
    (['--synthetic-nodes', '5'], '--synthetic-nodes'),
])
def test_bad_arguments(args, argument, capsys):
    parser = load_example(SCRIPT).build_parser()
    assert_parse_error(parser, args, argument, capsys)


def test_bad_argument_from_the_command_line():
    assert_one_line_error(run_example(SCRIPT, '--fanout', '5,5'), '--fanout')
