import json

import pytest
import torch

from pyg_qgnn.__main__ import main
from pyg_qgnn.demo import binsage
from pyg_qgnn.demo.binsage import run_binsage
from tests.conftest import SHARED_DATA, has_shared

TINY = ['--only', 'binsage', '--binsage-hidden', '16',
        '--binsage-float-epochs', '3', '--binsage-epochs', '3', '--no-progress']
MODELS = ['GraphSAGE', 'BinGraphSAGE (scratch)', 'BinGraphSAGE (distilled)']


@pytest.fixture(autouse=True)
def short_timing(monkeypatch):
    monkeypatch.setattr(binsage, 'MIN_RUN_TIME', 0.01)


def check_rows(rows, source, runs):
    assert [r['model'] for r in rows] == MODELS
    for r in rows:
        assert (r['section'], r['dataset'], r['source']) == ('binsage', 'Cora',
                                                            source)
        assert r['runs'] == runs and 0.0 <= r['acc_mean'] <= 1.0
    assert 'same_predictions' not in rows[0]  # the float model: no deployment
    for r in rows[1:]:
        # The deployment contract: the fake-quantized model's predictions.
        assert r['same_predictions'] == 1.0
        assert r['deployed_acc_mean'] == r['acc_mean'] == \
            r['fake_quant_acc_mean']
        assert r['float_file_bytes'] == rows[0]['file_bytes']
        # 1-bit weights: 16 hidden channels on 1433 inputs shrink 25 times.
        assert r['float_file_bytes'] / r['file_bytes'] > 25
        assert r['deployed_time_s'] > 0 and r['float_time_s'] > 0


@pytest.mark.skipif(not has_shared('Cora'), reason='shared Cora data absent')
def test_binsage_section_on_cora(tmp_path, capsys):
    out, plot = tmp_path / 'rows.json', tmp_path / 'binsage.png'
    threads = torch.get_num_threads()
    main(['demo', *TINY, '--root', str(SHARED_DATA), '--seeds', '2',
          '--binsage-seeds', '2', '--json', str(out), '--plot', str(plot)])
    assert torch.get_num_threads() == threads  # trains on one, restores
    rows = json.loads(out.read_text())
    check_rows(rows, 'real', runs=2)
    assert rows[0]['split'] == 'public Planetoid split (Kipf & Welling)'
    assert plot.stat().st_size > 0
    printed = capsys.readouterr().out
    assert 'GraphSAGE and BinGraphSAGE (2 layers, 16 hidden, mean ' \
        'aggregation) on Cora:' in printed
    assert '| BinGraphSAGE (distilled) |' in printed and '| 100% |' in \
        printed
    assert 'WARNING' not in printed and 'SYNTHETIC' not in printed


def test_offline_stand_in_is_announced(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv('PYG_QGNN_DATA', raising=False)
    monkeypatch.setattr('pyg_qgnn.datasets.locate.shared_data_candidates',
                        lambda: [])
    monkeypatch.setattr('pyg_qgnn.datasets.planetoid._download',
                        lambda name: (_ for _ in ()).throw(OSError('offline')))
    out = tmp_path / 'rows.json'
    main(['demo', *TINY, '--seeds', '1', '--json', str(out)])
    check_rows(json.loads(out.read_text()), 'synthetic', runs=1)
    printed = capsys.readouterr().out
    assert 'on a SYNTHETIC stand-in for Cora' in printed
    assert 'on Cora:' not in printed


def test_distillation_settings_reach_training(monkeypatch):
    seen = []
    train = binsage.train_node_classifier

    def spy(model, data, epochs, **kwargs):
        seen.append((type(model).__name__, epochs, kwargs))
        return train(model, data, epochs, **kwargs)

    monkeypatch.setattr(binsage, 'train_node_classifier', spy)
    monkeypatch.setattr('pyg_qgnn.datasets.locate.shared_data_candidates',
                        lambda: [])
    monkeypatch.delenv('PYG_QGNN_DATA', raising=False)
    monkeypatch.setattr('pyg_qgnn.datasets.planetoid._download',
                        lambda name: (_ for _ in ()).throw(OSError('offline')))
    runs, _ = run_binsage(hidden=8, float_epochs=2, epochs=3, lr=0.02,
                          temperature=2.0, alpha=0.4)
    assert [(name, epochs) for name, epochs, _ in seen] == [
        ('GraphSAGE', 2), ('BinGraphSAGE', 3), ('BinGraphSAGE', 3)]
    scratch, distilled = seen[1][2], seen[2][2]
    assert scratch['teacher_logits'] is None
    # The teacher's logits: those of the float model as trained.
    assert distilled['teacher_logits'].shape == (2708, 7)
    assert (distilled['lr'], distilled['temperature'], distilled['alpha'],
            distilled['weight_decay']) == (0.02, 2.0, 0.4, 0.0)
    assert [len(r) for r in runs.values()] == [1, 1, 1]


@pytest.mark.parametrize('args,argument', [
    (['--binsage-epochs', '0'], '--binsage-epochs'),
    (['--binsage-hidden', '-1'], '--binsage-hidden'),
    (['--binsage-alpha', '1.5'], '--binsage-alpha'),
    (['--binsage-temperature', '0'], '--binsage-temperature'),
    (['--binsage-seeds', '0'], '--binsage-seeds'),
])
def test_bad_arguments_fail_fast(capsys, args, argument):
    with pytest.raises(SystemExit) as exit_info:
        main(['demo', '--only', 'binsage', *args])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: argument ' +
                                                   argument)


@pytest.mark.parametrize('name', ['seeds', 'hidden', 'layers', 'epochs',
                                  'float_epochs'])
def test_run_binsage_rejects_nonpositive_counts(name):
    with pytest.raises(ValueError, match=f"'{name}'"):
        run_binsage(**{name: 0})
