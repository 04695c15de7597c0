import json

import pytest
import torch
from torch import nn
from torch_geometric.loader import DataLoader
from torch_geometric.nn.models import GCN, GIN

from pyg_qgnn import deploy, quantize_model
from pyg_qgnn.nn.models import GraphClassifier
from pyg_qgnn.quantizers import Quantizer
from pyg_qgnn.schemes import A2Q, QAT, DegreeQuant
from pyg_qgnn.train import (
    DeployedRow,
    Deployment,
    DeploymentTally,
    Method,
    MethodRow,
    compare_deployed,
    compare_deployed_on_graphs,
    compare_deployed_on_nodes,
    compare_on_graphs,
    compare_on_nodes,
    deployed_records,
    format_deployed_rows,
    stratified_folds,
    train_node_classifier,
)
from pyg_qgnn.train.deployed import FLOAT_SKIP, time_pair
from tests.train.test_graph import toy_dataset
from tests.train.test_node import two_community_graph

FAST = 0.01  # seconds of timing per model: the values are not under test


class Graphs(list):
    r"""A list of graphs that, like a PyG dataset, takes index tensors."""
    def __getitem__(self, idx):
        if isinstance(idx, torch.Tensor):
            return Graphs(list.__getitem__(self, int(i)) for i in idx)
        return list.__getitem__(self, idx)


def trained(scheme, data, model=None, epochs=3):
    torch.manual_seed(0)
    model = model or GCN(8, 16, num_layers=2, out_channels=2)
    qmodel = quantize_model(model, scheme)
    train_node_classifier(qmodel, data, epochs)
    return qmodel.eval()


@pytest.mark.parametrize('scheme', [QAT(8), QAT(4), DegreeQuant(4),
                                    A2Q(init_bits=4)],
                         ids=['qat8', 'qat4', 'dq4', 'a2q4'])
def test_deployed_model_matches_the_fake_quantized_one(scheme):
    data = two_community_graph()
    qmodel = trained(scheme, data)
    result = compare_deployed_on_nodes(qmodel, data, min_run_time=FAST)
    assert result.same_predictions == 1.0
    assert result.accuracy == result.fake_quant_accuracy
    # Scored on the test mask, as train_node_classifier scores it.
    pred = qmodel(data.x, data.edge_index).argmax(-1)
    mask = data.test_mask
    assert result.fake_quant_accuracy == pytest.approx(
        float((pred[mask] == data.y[mask]).float().mean()))
    assert result.bytes < result.float_bytes
    assert result.bytes == deploy.nbytes(deploy.convert(qmodel))
    assert 0 < result.file_bytes and 0 < result.float_file_bytes
    assert result.time_s > 0 and result.float_time_s > 0
    assert result.speedup == result.float_time_s / result.time_s
    assert qmodel.training is False  # the trained model is left as it was


def test_float_baseline_is_the_given_model_or_the_same_weights():
    data = two_community_graph()
    float_model = GCN(8, 16, num_layers=2, out_channels=2).eval()
    qmodel = trained(QAT(8), data, model=float_model)
    given = compare_deployed_on_nodes(qmodel, data, float_model=float_model,
                                      min_run_time=FAST)
    assert given.float_bytes == deploy.nbytes(float_model)
    # Without one: the quantized model with fake quantization off, whose
    # float parameters are those of the float model (plus quantizer state).
    same_weights = compare_deployed_on_nodes(qmodel, data, min_run_time=FAST)
    assert same_weights.float_bytes > given.float_bytes
    # Fake quantization was switched off on a copy, not on the model.
    quantizers = [m for m in qmodel.modules() if isinstance(m, Quantizer)]
    assert quantizers and all(q.fake_quant_enabled for q in quantizers)


def test_graph_classification_over_every_test_batch():
    dataset = toy_dataset(30)
    torch.manual_seed(0)
    model = GraphClassifier(3, 2, hidden_channels=8, num_layers=2)
    qmodel = quantize_model(model, QAT(8)).train()
    for batch in DataLoader(dataset, 8):  # the quantizers observe ranges
        qmodel(batch.x, batch.edge_index, batch.batch)
    qmodel.eval()
    result = compare_deployed_on_graphs(qmodel, dataset, batch_size=8,
                                        min_run_time=FAST)
    assert result.same_predictions == 1.0
    assert result.accuracy == result.fake_quant_accuracy
    # All 30 graphs count (4 batches of at most 8), not only the first.
    preds = torch.cat([qmodel(b.x, b.edge_index, b.batch).argmax(-1)
                       for b in DataLoader(dataset, 8)])
    labels = torch.tensor([int(d.y) for d in dataset])
    assert result.accuracy == pytest.approx(
        float((preds == labels).float().mean()))


class Disagreeing(nn.Module):
    r"""A stand-in deployed model that predicts class 0 everywhere."""
    def forward(self, x, edge_index):
        out = torch.zeros(x.size(0), 2)
        out[:, 0] = 1.0
        return out


def test_a_wrong_deployment_shows_in_the_result(monkeypatch):
    data = two_community_graph()
    qmodel = trained(QAT(8), data)
    monkeypatch.setattr('pyg_qgnn.deploy.convert', lambda m: Disagreeing())
    result = compare_deployed_on_nodes(qmodel, data, min_run_time=FAST)
    pred = qmodel(data.x, data.edge_index).argmax(-1)
    assert result.same_predictions == pytest.approx(
        float((pred == 0).float().mean()))
    assert result.same_predictions < 1.0
    assert result.accuracy == pytest.approx(
        float((data.y[data.test_mask] == 0).float().mean()))


def test_bad_input_is_refused():
    data = two_community_graph()
    qmodel = trained(QAT(8), data)
    with pytest.raises(ValueError, match="'float_model' is in training"):
        compare_deployed_on_nodes(qmodel, data, min_run_time=FAST,
                                  float_model=GCN(8, 16, 2, 2).train())
    with pytest.raises(ValueError, match='training mode'):
        compare_deployed_on_nodes(qmodel.train(), data, min_run_time=FAST)
    qmodel.eval()
    with pytest.raises(ValueError, match="'targets' has 3 labels"):
        compare_deployed(qmodel, lambda m: [m(data.x, data.edge_index)],
                         torch.zeros(3, dtype=torch.long),
                         min_run_time=FAST)
    with pytest.raises(ValueError, match="'min_run_time' must be positive"):
        compare_deployed_on_nodes(qmodel, data, min_run_time=0.0)


def test_time_pair_alternates_and_measures_each():
    calls = []
    first, second = time_pair(lambda: calls.append(1),
                              lambda: calls.append(2), 0.03, rounds=3)
    assert first > 0 and second > 0
    assert calls[:2] == [1, 2] and set(calls) == {1, 2}
    # Alternating rounds: the second function runs before the first's last.
    last_first = len(calls) - 1 - calls[::-1].index(1)
    assert calls.index(2) < last_first


def result(acc, same=1.0, time_s=0.01, float_time_s=0.02):
    return Deployment(acc, acc, same, time_s, float_time_s, 100, 400, 150,
                      450)


def test_tally_deploys_quantized_models_against_the_seeds_float_model():
    seen = []

    def compare(model, *split, float_model):
        seen.append((model, split, float_model))
        return result(0.5 + 0.1 * len(seen), time_s=0.01 * len(seen))

    tally = DeploymentTally(compare)
    float_a, float_b, q1, q2 = (nn.Linear(1, 1) for _ in range(4))
    fp32, qat = Method('fp32'), Method('qat', 8)
    for float_model, qmodel in ((float_a, q1), (float_b, q2)):
        tally(fp32, float_model, 'fold')
        tally(qat, qmodel, 'fold')
    assert seen == [(q1, ('fold', ), float_a), (q2, ('fold', ), float_b)]
    rows = tally.rows()
    assert rows[0] == DeployedRow('FP32', 32, not_deployed=FLOAT_SKIP)
    row = rows[1]
    assert (row.method, row.bits, row.not_deployed) == ('QAT', 8, None)
    assert row.deployed_acc_mean == pytest.approx(0.65)
    assert row.deployed_acc_std == pytest.approx(0.0707, abs=1e-4)
    assert row.deployed_time_s == pytest.approx(0.015)  # median of 2 runs
    assert row.speedup == pytest.approx(0.02 / 0.015)
    assert row.same_predictions == 1.0
    assert (row.deployed_bytes, row.float_bytes) == (100, 400)


def test_same_predictions_is_the_worst_run():
    row = DeployedRow.of(Method('dq', 4), [result(0.8), result(0.8, 0.99),
                                           result(0.8)])
    assert row.same_predictions == 0.99


ROWS = [MethodRow('FP32', 32, 0.8, 0.01, 32.0, 1000, 2),
        MethodRow('QAT', 8, 0.79, 0.0, 8.0, 250, 2)]


def test_table_has_the_deployed_columns():
    deployed = [DeployedRow('FP32', 32, not_deployed=FLOAT_SKIP),
                DeployedRow.of(Method('qat', 8), [result(0.79), result(0.79)])]
    table = format_deployed_rows(ROWS, deployed)
    assert ('| FP32 | 32 | 80.00 ± 1.00 | – | – | 32.00 | 1,000 | 1.00x | '
            '– | – | – | – |') in table
    assert ('| QAT | 8 | 79.00 ± 0.00 | 79.00 ± 0.00 | 100% | 8.00 | 250 | '
            '4.00x | 100 | 10.00 | 20.00 | 2.00x |') in table
    assert 'WARNING' not in table


def test_table_says_loudly_when_predictions_differ():
    deployed = [DeployedRow('FP32', 32, not_deployed=FLOAT_SKIP),
                DeployedRow.of(Method('qat', 8), [result(0.79, 0.99999)])]
    table = format_deployed_rows(ROWS, deployed)
    # Rounded down: one differing prediction in 100,000 is not "100%".
    assert '| 99.99% |' in table
    warning = table.splitlines()[-1]
    assert warning.startswith('WARNING: deployed QAT 8-bit predicts another '
                              'class') and '0.001% of the outputs' in warning


def test_rows_must_pair_up():
    with pytest.raises(ValueError, match="'deployed' must have one row"):
        format_deployed_rows(ROWS, [DeployedRow('FP32', 32)])
    with pytest.raises(ValueError, match="'deployed' must have one row"):
        deployed_records(ROWS, [DeployedRow('QAT', 8), DeployedRow('FP32', 32)])


def test_records_merge_both_rows_and_are_json():
    deployed = [DeployedRow('FP32', 32, not_deployed=FLOAT_SKIP),
                DeployedRow.of(Method('qat', 8), [result(0.79)])]
    records = json.loads(json.dumps(deployed_records(ROWS, deployed)))
    assert records[0]['acc_mean'] == 0.8 and records[0]['speedup'] is None
    assert records[0]['not_deployed'] == FLOAT_SKIP
    assert records[1]['deployed_acc_mean'] == 0.79
    assert records[1]['deployed_time_s'] == 0.01


def test_comparisons_hand_every_trained_model_to_the_tally():
    data = two_community_graph()
    tally = DeploymentTally.on_nodes(data, min_run_time=FAST)
    methods = [Method('fp32'), Method('qat', 8), Method('a2q', 4)]
    rows = compare_on_nodes(lambda: GCN(8, 16, num_layers=2, out_channels=2),
                            data, methods, seeds=1, epochs=3,
                            finetune_epochs=2, on_model=tally)
    deployed = tally.rows()
    assert [(d.method, d.bits) for d in deployed] == \
        [(r.method, r.bits) for r in rows]
    for row, extra in zip(rows[1:], deployed[1:]):
        assert extra.same_predictions == 1.0
        assert extra.deployed_acc_mean == row.acc_mean  # as trained, scored


def test_graph_comparison_hands_over_the_fold():
    dataset = Graphs(toy_dataset(30))
    labels = torch.tensor([int(d.y) for d in dataset])
    folds = stratified_folds(labels, 3, seed=0)
    seen = []
    tally = DeploymentTally.on_graphs(dataset, batch_size=8,
                                      min_run_time=FAST)

    def spy(method, model, fold):
        seen.append(len(fold[2]))
        tally(method, model, fold)
    rows = compare_on_graphs(
        lambda: GraphClassifier(3, 2, hidden_channels=8, num_layers=1),
        dataset, [Method('fp32'), Method('dq', 8)], folds, epochs=2,
        finetune_epochs=1, batch_size=8, on_model=spy)
    assert seen == [len(f[2]) for f in folds for _ in range(2)]
    dq = tally.rows()[1]
    assert dq.same_predictions == 1.0 and dq.deployed_runs == 3
    assert dq.deployed_acc_mean == pytest.approx(rows[1].acc_mean)


def test_gin_node_model_deploys_with_its_float_parent():
    data = two_community_graph()
    torch.manual_seed(0)
    float_model = GIN(8, 16, num_layers=2, out_channels=2).eval()
    qmodel = trained(DegreeQuant(8), data, model=float_model)
    out = compare_deployed_on_nodes(qmodel, data, float_model=float_model,
                                    min_run_time=FAST)
    assert out.same_predictions == 1.0 and out.bytes < out.float_bytes
