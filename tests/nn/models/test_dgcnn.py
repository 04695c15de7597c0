"""Tests of the float and binary DGCNN classifiers."""
import pytest
import torch

from pyg_qgnn import SignQuantizer, set_binarization_stage
from pyg_qgnn.distill import GraphRecorder
from pyg_qgnn.nn import BinLinear, DynamicBinEdgeConv, DynamicXorEdgeConv
from pyg_qgnn.nn.models import DGCNN, BinaryDGCNN

TINY = dict(num_classes=5, k=4, conv_channels=(8, 8, 16),
            embed_channels=16, hidden_channels=(16, ))


def clouds(sizes=(20, 14, 17), seed=0):
    gen = torch.Generator().manual_seed(seed)
    pos = torch.randn(sum(sizes), 3, generator=gen)
    batch = torch.arange(len(sizes)).repeat_interleave(torch.tensor(sizes))
    return pos, batch


def layer_outputs(model, pos, batch):
    outputs = []
    handles = [conv.register_forward_hook(
        lambda m, args, out: outputs.append(out)) for conv in model.convs]
    logits = model(pos, batch)
    for handle in handles:
        handle.remove()
    return logits, outputs


@pytest.mark.parametrize('variant', ['float', 'rf', 'bf1', 'bf2'])
def test_forward_backward_and_layer_types(variant):
    torch.manual_seed(0)
    model = DGCNN(**TINY) if variant == 'float' else BinaryDGCNN(variant,
                                                                 **TINY)
    pos, batch = clouds()
    logits, outputs = layer_outputs(model, pos, batch)
    assert logits.shape == (3, 5) and bool(torch.isfinite(logits).all())
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    if variant == 'rf':
        assert all(isinstance(c, DynamicBinEdgeConv) for c in model.convs)
        assert not bool(((outputs[1] == 1) | (outputs[1] == -1)).all())
    elif variant != 'float':
        assert all(isinstance(c, DynamicXorEdgeConv) for c in model.convs)
        norm = 'after' if variant == 'bf1' else 'before'
        assert all(c.norm_placement == norm for c in model.convs)
        for out in outputs:  # binary node features (Hamming-space kNN)
            assert bool(((out == 1) | (out == -1)).all())


@pytest.mark.parametrize('variant', ['rf', 'bf1', 'bf2'])
def test_first_layer_real_inputs_last_layer_real_weights(variant):
    model = BinaryDGCNN(variant, **TINY)
    first = model.convs[0]
    assert first.input_quantizer is None
    assert isinstance(first.weight_quantizer, SignQuantizer)
    assert first.knn_graph.metric == 'l2'
    assert all(c.knn_graph.metric == 'xor' for c in
               BinaryDGCNN(variant, knn='xor', **TINY).convs[1:])
    last = model.head[-1]
    assert isinstance(last, BinLinear) and last.weight_quantizer is None
    assert isinstance(last.input_quantizer, SignQuantizer)
    assert last.bias is not None and last.activation is None
    hidden = [m for m in model.head if isinstance(m, BinLinear)][:-1]
    assert all(isinstance(h.weight_quantizer, SignQuantizer) for h in hidden)


def test_paper_widths():
    # DGCNN of Wang et al.: EdgeConv 64, 64, 128, 256, embedding 1024, MLP
    # 512, 256, 40 classes (no bias before a batch norm): 1.81M parameters.
    model = DGCNN()
    convs = 6 * 64 + 128 * 64 + 128 * 128 + 256 * 256
    norms = 2 * (64 + 64 + 128 + 256 + 1024 + 512 + 256)
    mlp = 512 * 1024 + 2048 * 512 + 512 * 256 + (256 * 40 + 40)
    assert sum(p.numel() for p in model.parameters()) == convs + norms + mlp
    binary = BinaryDGCNN('bf1')
    assert [c.out_channels for c in binary.convs] == [64, 64, 128, 256]
    assert all(c.k == 20 for c in binary.convs)
    assert binary.head[-1].out_channels == 40


@pytest.mark.parametrize('variant', ['rf', 'bf1'])
def test_stages_switch_the_whole_model(variant):
    torch.manual_seed(0)
    model = BinaryDGCNN(variant, **TINY).eval()
    pos, batch = clouds()
    set_binarization_stage(model, 0)
    quantizers = [m for m in model.modules() if isinstance(m, SignQuantizer)]
    assert not any(q.fake_quant_enabled for q in quantizers)
    set_binarization_stage(model, 1)
    _, outputs = layer_outputs(model, pos, batch)
    if variant == 'bf1':  # tanh-relaxed node features
        assert bool((outputs[1].abs() < 1).all())
    set_binarization_stage(model, 3)
    assert all(q.binarizing for q in quantizers)


def test_clouds_are_independent_and_permutation_invariant():
    torch.manual_seed(0)
    pos, batch = clouds()
    for model in (DGCNN(**TINY), BinaryDGCNN('rf', **TINY)):
        model.eval()
        logits = model(pos, batch)
        gen = torch.Generator().manual_seed(1)
        perm = torch.cat([idx[torch.randperm(idx.numel(), generator=gen)]
                          for idx in torch.arange(51).split([20, 14, 17])])
        assert torch.allclose(model(pos[perm], batch), logits, atol=1e-4)
        alone = model(pos[20:34], torch.zeros(14, dtype=torch.long))
        assert torch.allclose(alone, logits[1:2], atol=1e-4)


def test_lsp_transfer_points_are_the_dynamic_graphs():
    model = BinaryDGCNN('bf2', **TINY)
    pos, batch = clouds()
    with GraphRecorder(model) as recorder:
        model(pos, batch)
    assert len(recorder.graphs) == 3
    assert torch.equal(recorder.graphs[0][0], pos)
    assert all(e.size(1) == 4 * 51 for _, e in recorder.graphs)


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="'variant'"):
        BinaryDGCNN('bf3')
    with pytest.raises(ValueError, match="'knn'"):
        BinaryDGCNN('rf', knn='cosine')
    with pytest.raises(ValueError, match="'conv_channels'"):
        DGCNN(conv_channels=())
    assert "variant='bf1'" in repr(BinaryDGCNN('bf1', **TINY))


@pytest.mark.parametrize('variant', ['rf', 'bf2'])
def test_checkpoint_round_trip_through_safetensors(tmp_path, variant):
    from pyg_qgnn import deploy

    torch.manual_seed(0)
    model = BinaryDGCNN(variant, **TINY)
    pos, batch = clouds()
    model(pos, batch)  # batch-norm statistics
    model.eval()
    path = tmp_path / 'model.safetensors'
    deploy.save(model, path)
    torch.manual_seed(1)
    loaded = deploy.load(path, BinaryDGCNN(variant, **TINY)).eval()
    assert torch.equal(loaded(pos, batch), model(pos, batch))
