r"""Training loops shared by the demo, the examples and the benchmarks:
full-batch node classification, k-fold graph classification and point-cloud
classification (float and binary DGCNN), all with model selection on
validation data, and mean ± std result tables."""
from pyg_qgnn.train.compare import (
    MethodRow,
    compare_on_graphs,
    compare_on_nodes,
    file_size,
    format_rows,
    plot_rows,
)
from pyg_qgnn.train.deployed import (
    DeployedRow,
    Deployment,
    DeploymentTally,
    compare_deployed,
    compare_deployed_on_graphs,
    compare_deployed_on_nodes,
    deployed_records,
    format_deployed_rows,
)
from pyg_qgnn.train.graph import (
    CrossValidation,
    cross_validate,
    stratified_folds,
    train_graph_classifier,
)
from pyg_qgnn.train.methods import METHODS, Method
from pyg_qgnn.train.node import (
    NodeResult,
    Selection,
    evaluate_nodes,
    make_optimizer,
    train_node_classifier,
)
from pyg_qgnn.train.pointcloud import (
    PointCloudRecipe,
    PointCloudResult,
    evaluate_point_classifier,
    holdout_split,
    run_point_cloud_recipe,
    train_point_classifier,
)
from pyg_qgnn.train.recsys import (
    RecResult,
    TripleSampler,
    bpr_loss,
    evaluate_recommender,
    lambda_loss,
    lightgcn,
    train_recommender,
)
from pyg_qgnn.train.lightgnn import (
    ABLATIONS,
    LightGNNConfig,
    evaluate_lightgnn,
    train_lightgnn,
)
from pyg_qgnn.train.lightgnn_pipeline import (
    LightGNNRow,
    LightGNNRun,
    format_lightgnn_rows,
    run_lightgnn,
    time_forwards,
)
from pyg_qgnn.train.results import (
    Summary,
    markdown_table,
    seed_everything,
    summarize,
)
from pyg_qgnn.train import distributed
from pyg_qgnn.train.sampled import (
    SampledResult,
    layerwise_inference,
    score_splits,
    train_sampled,
)

__all__ = [
    'NodeResult',
    'train_node_classifier',
    'evaluate_nodes',
    'make_optimizer',
    'Selection',
    'CrossValidation',
    'cross_validate',
    'stratified_folds',
    'train_graph_classifier',
    'Summary',
    'summarize',
    'markdown_table',
    'seed_everything',
    'Method',
    'METHODS',
    'MethodRow',
    'compare_on_nodes',
    'compare_on_graphs',
    'format_rows',
    'plot_rows',
    'file_size',
    'Deployment',
    'DeployedRow',
    'DeploymentTally',
    'compare_deployed',
    'compare_deployed_on_nodes',
    'compare_deployed_on_graphs',
    'deployed_records',
    'format_deployed_rows',
    'lightgcn',
    'LightGNNConfig',
    'ABLATIONS',
    'train_lightgnn',
    'evaluate_lightgnn',
    'run_lightgnn',
    'LightGNNRun',
    'LightGNNRow',
    'format_lightgnn_rows',
    'time_forwards',
    'train_recommender',
    'evaluate_recommender',
    'RecResult',
    'TripleSampler',
    'bpr_loss',
    'lambda_loss',
    'PointCloudRecipe',
    'PointCloudResult',
    'run_point_cloud_recipe',
    'train_point_classifier',
    'evaluate_point_classifier',
    'holdout_split',
    'distributed',
    'train_sampled',
    'SampledResult',
    'layerwise_inference',
    'score_splits',
]
