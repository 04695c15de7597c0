"""Tests of quantization_report (pyg_qgnn.report)."""
import json
import math

import pytest
import torch
from torch_geometric.nn.models import GCN

from pyg_qgnn import (
    A2Q,
    QAT,
    DegreeQuant,
    calibrate,
    quantization_report,
    quantize_model,
)


def graph(num_nodes=20, channels=8):
    gen = torch.Generator().manual_seed(0)
    return (torch.randn(num_nodes, channels, generator=gen),
            torch.randint(num_nodes, (2, 4 * num_nodes), generator=gen))


def test_qat_report_lists_convs_points_and_weight_bytes():
    model = quantize_model(GCN(8, 16, 2, 4, jk='cat'), QAT(bits=4))
    calibrate(model, *graph())
    report = quantization_report(model)
    assert [layer.name for layer in report.layers] == \
        ['convs.0', 'convs.1', 'lin']  # convs.0.lin is part of convs.0
    conv = report.layers[0]
    assert conv.layer == 'QuantGCNConv'
    assert [(p.point, p.min_bits, p.max_bits) for p in conv.points] == \
        [('input', 4, 4), ('weight', 4, 4), ('aggregate', 4, 4)]
    assert 'observer=per' in conv.points[0].detail
    # 16x8 weight at 4 bits, one float32 scale and zero point.
    assert conv.weight_bytes == math.ceil(16 * 8 * 4 / 8) + 4 + 4
    assert conv.float_weight_bytes == 16 * 8 * 4
    assert report.weight_bytes == sum(l.weight_bytes for l in report.layers)
    assert report.average_bits is None
    text = str(report)
    assert 'convs.0' in text and 'QuantGCNConv' in text and 'input 4' in text
    json.dumps(report.to_dict())


def test_bits_follow_the_scheme():
    report = quantization_report(quantize_model(GCN(8, 16, 2, 4), QAT(8)))
    assert {p.min_bits for layer in report.layers for p in layer.points} == \
        {8}


def test_degree_quant_report_names_the_protection():
    model = quantize_model(GCN(8, 16, 2, 4), DegreeQuant(4, 0.0, 0.2))
    report = quantization_report(model)
    point = report.layers[0].points[0]
    assert point.quantizer == 'DegreeQuantizer'
    assert 'p=0.0..0.2' in point.detail


def test_a2q_report_gives_bit_statistics_and_model_average():
    model = quantize_model(GCN(8, 16, 2, 4), A2Q(init_bits=4))
    before = quantization_report(model).layers[0].points[0]
    assert (before.mean_bits, before.min_bits, before.max_bits) == (4, 4, 4)
    model(*graph())
    first = model.convs[0].input_quantizer
    second = model.convs[1].input_quantizer
    with torch.no_grad():
        first.bit_width.copy_(torch.arange(20) % 4 + 2.0)  # 2..5
        second.bit_width.fill_(7.0)
    report = quantization_report(model)
    point = report.layers[0].points[0]
    assert (point.min_bits, point.max_bits) == (2, 5)
    assert math.isclose(point.mean_bits, 3.5)
    assert '20 nodes' in point.detail
    assert report.layers[1].points[0].mean_bits == 7.0
    # Memory weighted: 8 features per node in the first layer, 16 in the
    # second.
    expected = (8 * 20 * 3.5 + 16 * 20 * 7) / (8 * 20 + 16 * 20)
    assert math.isclose(report.average_bits, expected, rel_tol=1e-6)
    assert 'A2Q average bits' in str(report)
    weight = report.layers[0].points[1]
    assert weight.quantizer == 'IntegerQuantizer' and weight.min_bits == 4
    # LSQ weights: one float32 step and zero point per output channel.
    assert report.layers[0].weight_bytes == 16 * 8 // 2 + 16 * 4 * 2


def test_float_model_has_an_empty_report():
    report = quantization_report(GCN(8, 16, 2, 4))
    assert report.layers == [] and str(report) == 'no quantized layers'
    assert report.weight_bytes == 0
    with pytest.raises(TypeError, match="'model'"):
        quantization_report('model')
