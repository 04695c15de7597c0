r"""Knowledge distillation: logit matching, local structure preservation
(LSP) and cascaded distillation of binary models."""
from pyg_qgnn.distill.cascade import (
    PAPER_STAGES,
    StageConfig,
    StageResult,
    accuracy,
    cascade_distill,
    distill,
    point_cloud_forward,
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
]
