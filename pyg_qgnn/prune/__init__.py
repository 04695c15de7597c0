r"""Pruning for any :class:`torch.nn.Module`, PyG layers included: global
and layer-wise magnitude pruning, :math:`L_2`-regularisation pruning, the
lottery-ticket test, structured channel removal, and exact sparse
checkpoints (`Khedri et al., 2025 <https://arxiv.org/abs/2510.22058>`_),
and LightGNN's learnable edge and embedding-entry pruning of recommenders
(`Chen et al., 2025 <https://arxiv.org/abs/2501.03228>`_).

.. code-block:: python

    from pyg_qgnn import prune

    prune.magnitude_prune(model, 0.9)              # masks, one threshold
    train_node_classifier(model, data, 50)         # fine-tune: masks hold
    prune.layer_sparsity(model)                    # zeros per layer
    prune.save_sparse(model, 'gcn90.safetensors')  # values + positions
    prune.load_sparse('gcn90.safetensors', GCN(...))

Masks are :mod:`torch.nn.utils.parametrize` parametrizations
(:class:`WeightMask`), so every training loop fine-tunes a pruned model with
its masks fixed, and :func:`make_permanent` folds them into the weights.
"""
from pyg_qgnn.prune.l2 import L2Penalty, l2_penalty
from pyg_qgnn.prune.lottery import (
    TicketRound,
    iterative_magnitude_pruning,
    rewind,
    snapshot,
)
from pyg_qgnn.prune.magnitude import SCOPES, magnitude_prune, threshold_prune
from pyg_qgnn.prune.masks import (
    WeightMask,
    apply_masks,
    effective_state,
    get_masks,
    is_prunable_weight,
    layer_sparsity,
    make_permanent,
    prunable_parameters,
    remove_masks,
    sparsity,
)
from pyg_qgnn.prune.sparse_checkpoint import (
    checkpoint_bytes,
    load_sparse,
    save_sparse,
    to_sparse_bytes,
)
from pyg_qgnn.prune.structured import ChannelGroup, prune_channels
from pyg_qgnn.prune.lightgnn import (
    fold_layer_weights,
    joint_schedule,
    keep_top_per_group,
    prune_entries,
    prune_pairs,
    pruning_schedule,
    reduce_layers,
)

__all__ = [
    'magnitude_prune',
    'threshold_prune',
    'SCOPES',
    'l2_penalty',
    'L2Penalty',
    'WeightMask',
    'prunable_parameters',
    'is_prunable_weight',
    'get_masks',
    'apply_masks',
    'remove_masks',
    'make_permanent',
    'effective_state',
    'layer_sparsity',
    'sparsity',
    'snapshot',
    'rewind',
    'iterative_magnitude_pruning',
    'TicketRound',
    'prune_channels',
    'ChannelGroup',
    'save_sparse',
    'load_sparse',
    'checkpoint_bytes',
    'to_sparse_bytes',
    'pruning_schedule',
    'joint_schedule',
    'prune_entries',
    'prune_pairs',
    'reduce_layers',
    'fold_layer_weights',
    'keep_top_per_group',
]
