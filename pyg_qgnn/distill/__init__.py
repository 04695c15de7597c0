r"""Knowledge distillation: logit matching, local structure preservation
(LSP) and cascaded distillation of binary models; LightGNN's hierarchical
distillation losses of recommenders."""
from pyg_qgnn.distill.cascade import (
    PAPER_STAGES,
    StageConfig,
    StageResult,
    accuracy,
    cascade_distill,
    distill,
    point_cloud_forward,
)
from pyg_qgnn.distill.lightgnn import (
    embedding_kd_loss,
    importance_scores,
    mask_positive_sets,
    prediction_kd_loss,
    triple_margins,
    uniformity_loss,
)
from pyg_qgnn.distill.logits import (
    LogitMatching,
    distillation_loss,
    logit_matching_loss,
)
from pyg_qgnn.distill.lsp import (
    GraphRecorder,
    LSPLoss,
    edge_similarity,
    local_structure,
    lsp_loss,
)

__all__ = [
    'LogitMatching',
    'logit_matching_loss',
    'distillation_loss',
    'LSPLoss',
    'lsp_loss',
    'local_structure',
    'edge_similarity',
    'GraphRecorder',
    'StageConfig',
    'StageResult',
    'PAPER_STAGES',
    'distill',
    'cascade_distill',
    'accuracy',
    'point_cloud_forward',
    'prediction_kd_loss',
    'embedding_kd_loss',
    'uniformity_loss',
    'mask_positive_sets',
    'importance_scores',
    'triple_margins',
]
