r"""From a quantization-aware model to what ships: packed codes, safe files."""
from pyg_qgnn.deploy.serialize import load, save
from pyg_qgnn.deploy.backend import Backend, backend
from pyg_qgnn.deploy.binary_ops import (
    binary_matmul,
    pack_sign_bits,
    popcount,
    sign_codes,
    xor_edge_features,
)
from pyg_qgnn.deploy.knn import hamming_knn, hamming_knn_graph, knn
from pyg_qgnn.deploy.convert import (
    DeployedLayer,
    convert,
    deployable_layers,
    nbytes,
    register_deployed_layer,
)
from pyg_qgnn.deploy.binary import (
    DeployedBinEdgeConv,
    DeployedBinLinear,
    DeployedDynamicBinEdgeConv,
    DeployedDynamicXorEdgeConv,
    DeployedXorEdgeConv,
)
from pyg_qgnn.deploy.binary_sage import DeployedBinSAGEConv
from pyg_qgnn.deploy.gnaq import DeployedGNAQ
from pyg_qgnn.deploy.lightgnn import DeployedLightGNN
from pyg_qgnn.deploy.integer import (
    DeployedQuantGATConv,
    DeployedQuantGCNConv,
    DeployedQuantGINConv,
    DeployedQuantLinear,
    DeployedQuantSAGEConv,
)
from pyg_qgnn.deploy.integer_codec import Codes, IntegerCodec, IntegerWeight
from pyg_qgnn.deploy.packed_features import PackedFeatures, pack_features

__all__ = [
    'save',
    'load',
    'convert',
    'nbytes',
    'register_deployed_layer',
    'deployable_layers',
    'DeployedLayer',
    'backend',
    'Backend',
    'hamming_knn',
    'hamming_knn_graph',
    'knn',
    'binary_matmul',
    'xor_edge_features',
    'popcount',
    'sign_codes',
    'pack_sign_bits',
    'DeployedBinLinear',
    'DeployedBinEdgeConv',
    'DeployedDynamicBinEdgeConv',
    'DeployedXorEdgeConv',
    'DeployedDynamicXorEdgeConv',
    'DeployedBinSAGEConv',
    'DeployedGNAQ',
    'DeployedLightGNN',
    'DeployedQuantLinear',
    'DeployedQuantGCNConv',
    'DeployedQuantGINConv',
    'DeployedQuantSAGEConv',
    'DeployedQuantGATConv',
    'Codes',
    'IntegerCodec',
    'IntegerWeight',
    'PackedFeatures',
    'pack_features',
]
