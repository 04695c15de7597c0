r"""What every quantized twin of a PyG layer shares."""
import copy
import types
from typing import Callable, Dict, Iterable, Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torch_geometric.typing import Adj, OptPairTensor, Size, SparseTensor
from torch_geometric.utils import to_edge_index

from pyg_qgnn.quantizers import Quantizer

#: Where precision can be lost inside a layer, in the order data meets them.
QUANT_POINTS = ('input', 'weight', 'message', 'aggregate', 'output')
#: Every point :meth:`QuantLayer.quant` knows: attention layers add the
#: normalized attention coefficients.
ALL_QUANT_POINTS = QUANT_POINTS + ('attention', )


def parent_method(cls: type, name: str) -> Callable:
    r"""The method :obj:`name` of :obj:`cls`, as a function named
    :obj:`"_float_" + name`.

    A twin stores it under that name (:obj:`_float_forward =
    parent_method(GCNConv, 'forward')`) and calls :obj:`self._float_forward(
    ...)` where it would call :obj:`super().forward(...)`: TorchScript
    compiles no :obj:`super()`, and compiles a method under its function's
    own name, which must not clash with the override.
    """
    method = getattr(cls, name)
    alias = f'_float_{name}'
    function = types.FunctionType(method.__code__, method.__globals__, alias,
                                  method.__defaults__, method.__closure__)
    function.__kwdefaults__ = method.__kwdefaults__
    function.__annotations__ = dict(method.__annotations__)
    function.__qualname__ = f'{cls.__qualname__}.{alias}'
    function.__module__ = method.__module__
    function.__doc__ = method.__doc__
    return function


class QuantLayer:
    r"""Mixin of the quantized twins (:class:`QuantLinear`,
    :class:`QuantGCNConv`, ...).

    A twin subclasses its float parent, keeps its constructor arguments and
    state-dict keys, and adds one optional :class:`Quantizer` slot
    :obj:`<point>_quantizer` per entry of :obj:`quant_points`; with every
    slot :obj:`None` (or switched off) it computes exactly what its parent
    computes. :meth:`from_float` builds the twin of a trained float layer.

    :func:`torch.jit.script` compiles a twin wherever it compiles the parent
    layer: quantizers switched off (or absent) are left out, so the float
    computation is scripted exactly; a quantizer that is on is compiled with
    the layer if TorchScript can compile it, otherwise scripting stops with an
    error that names it (:class:`IntegerQuantizer` tracks its ranges in
    Python: script the float model, or use :func:`torch.compile`, which runs
    every quantizer).
    """
    # No class annotations here: TorchScript would take them for those of
    # the twin and miss its parent's (say GCNConv's cache attributes).
    quant_points = ()  # type: Tuple[str, ...]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # TorchScript compiles every property not listed here, and a
        # quantizer held by a sub-layer is for Python only.
        unused = list(cls.__dict__.get('__jit_unused_properties__', []))
        unused += [f'{point}_quantizer' for point in cls.quant_points
                   if cls._held_by_sublayer(point)]
        cls.__jit_unused_properties__ = sorted(set(unused))

    def _init_quantizers(self, quantizers: Dict[str, Optional[Quantizer]]):
        unknown = set(quantizers) - set(self.quant_points)
        if unknown:
            raise TypeError(f"'{type(self).__name__}' has no quantization "
                            f"point(s) {sorted(unknown)}; expected some of "
                            f"{list(self.quant_points)}")
        for point in self.quant_points:
            if self._held_by_sublayer(point):
                continue
            quantizer = quantizers.get(point)
            if quantizer is not None and not isinstance(quantizer, Quantizer):
                raise TypeError(f"'{point}_quantizer' must be a Quantizer or "
                                f"None (got {type(quantizer).__name__})")
            self.register_module(f'{point}_quantizer', quantizer)

    @classmethod
    def _held_by_sublayer(cls, point: str) -> bool:
        # A property, such as a conv's weight_quantizer that its QuantLinear
        # holds, so that the state-dict keys stay those of the parent.
        return isinstance(getattr(cls, f'{point}_quantizer', None), property)

    def _quantize_linears(self, names: Iterable[str],
                          weight_quantizer: Optional[Quantizer]):
        r"""Replaces the :class:`torch_geometric.nn.Linear` sub-layers
        :obj:`names` (those that are present) by :class:`QuantLinear`
        twins with the same settings. The first holds
        :obj:`weight_quantizer`, each further one a copy: weights of their
        own need ranges of their own."""
        from pyg_qgnn.nn.dense.quant_linear import QuantLinear
        for name in names:
            linear = getattr(self, name, None)
            if linear is None:
                continue
            setattr(self, name, QuantLinear(
                **QuantLinear.float_kwargs(linear),
                weight_quantizer=weight_quantizer))
            weight_quantizer = copy.deepcopy(weight_quantizer)

    def quant(self, point: str, x: Tensor) -> Tensor:
        r"""Applies the quantizer at :obj:`point`, if any, to :obj:`x`."""
        # One literal name per point of ALL_QUANT_POINTS, as TorchScript
        # compiles no computed getattr(); hasattr() is False there for the
        # slots that __prepare_scriptable__ leaves out.
        if point == 'input':
            if hasattr(self, 'input_quantizer'):
                quantizer = self.input_quantizer
                if quantizer is not None:
                    return quantizer(x)
        elif point == 'weight':
            if hasattr(self, 'weight_quantizer'):
                quantizer = self.weight_quantizer
                if quantizer is not None:
                    return quantizer(x)
        elif point == 'attention':
            if hasattr(self, 'attention_quantizer'):
                quantizer = self.attention_quantizer
                if quantizer is not None:
                    return quantizer(x)
        elif point == 'message':
            if hasattr(self, 'message_quantizer'):
                quantizer = self.message_quantizer
                if quantizer is not None:
                    return quantizer(x)
        elif point == 'aggregate':
            if hasattr(self, 'aggregate_quantizer'):
                quantizer = self.aggregate_quantizer
                if quantizer is not None:
                    return quantizer(x)
        elif point == 'output':
            if hasattr(self, 'output_quantizer'):
                quantizer = self.output_quantizer
                if quantizer is not None:
                    return quantizer(x)
        elif not torch.jit.is_scripting():  # points of other twins
            quantizer = getattr(self, f'{point}_quantizer', None)
            if quantizer is not None:
                return quantizer(x)
        return x

    def quant_input(
        self, x: Union[Tensor, OptPairTensor]
    ) -> Union[Tensor, OptPairTensor]:
        r"""Applies :math:`Q_{in}` once to each node feature matrix: to
        :obj:`x`, or to each side of a bipartite pair :obj:`(x_src, x_dst)`."""
        if isinstance(x, Tensor):
            return self.quant('input', x)
        x_src, x_dst = self.quant('input', x[0]), x[1]
        if x_dst is not None:
            x_dst = self.quant('input', x_dst)
        return x_src, x_dst

    def quantizes_messages(self) -> bool:
        r"""Whether :math:`Q_{msg}` is on: a fused sparse product, which never
        forms the messages, must then give way to per-edge messages."""
        if hasattr(self, 'message_quantizer'):
            quantizer = self.message_quantizer
            if quantizer is not None:
                return quantizer.fake_quant_enabled
        return False

    def exact_sums(self) -> bool:
        r"""Whether messages are summed in :obj:`float64`: in evaluation,
        when :math:`Q_{in}` is on. Dequantized messages then lie on one grid
        and their :obj:`float64` sum is exact in any order, so its one
        rounding to :obj:`float32` is also what the integer deployed layer
        computes (:mod:`pyg_qgnn.deploy.integer`). A :obj:`float32` sum
        would depend on the order of the additions, and where a sum falls on
        a rounding boundary of :math:`Q_{agg}` (one-hot features make that
        common) the two could land on different codes."""
        if self.training:
            return False
        if hasattr(self, 'input_quantizer'):
            quantizer = self.input_quantizer
            if quantizer is not None:
                return quantizer.fake_quant_enabled
        return False

    def sparse_edges(self, adj_t: Adj) -> Tuple[Tensor, Tensor, int]:
        r"""Edge indices :math:`(2, |\mathcal{E}|)` (target row, source
        column), edge values and the number of target nodes of a sparse
        adjacency matrix: what per-edge messages need where :math:`Q_{msg}`
        replaces a fused sparse product."""
        edge_index, value = to_edge_index(adj_t)
        # Alike, but TorchScript resolves size() on each type of the Union.
        if isinstance(adj_t, SparseTensor):
            return edge_index, value, adj_t.size(0)
        return edge_index, value, adj_t.size(0)

    def message_and_aggregate_per_edge(self, adj_t: Adj,
                                       x_src: Tensor) -> Tensor:
        r"""The fused product of :obj:`adj_t` and :obj:`x_src` of layers
        whose messages are :meth:`message` of :math:`\mathbf{x}_j` alone
        (GIN, GraphSAGE), with the messages formed one per edge so that
        :math:`Q_{msg}` sees them; like the :obj:`edge_index` path, it does
        not use the adjacency's values."""
        edge_index, _, num_targets = self.sparse_edges(adj_t)
        x_j = x_src.index_select(self.node_dim, edge_index[1])
        return self.aggregate(self.message(x_j), edge_index[0],
                              dim_size=num_targets)

    def __prepare_scriptable__(self):
        # torch.jit.script calls this on every module before compiling it.
        left_out = []
        for point in self.quant_points:
            name = f'{point}_quantizer'
            quantizer = None if self._held_by_sublayer(point) else \
                getattr(self, name)
            if quantizer is None or not quantizer.fake_quant_enabled:
                left_out.append(name)
                continue
            if point not in ALL_QUANT_POINTS:
                raise RuntimeError(
                    f"torch.jit.script cannot compile the '{name}' of "
                    f"'{type(self).__name__}': QuantLayer.quant() names only "
                    f"the points {ALL_QUANT_POINTS} in TorchScript")
            try:
                torch.jit.script(quantizer)
            except Exception as error:  # TorchScript raises many types
                raise RuntimeError(
                    f"torch.jit.script cannot compile the '{name}' of "
                    f"'{type(self).__name__}' ({type(quantizer).__name__} "
                    f"runs Python code); switch fake quantization off to "
                    f"script the float computation "
                    f"(model.apply(pyg_qgnn.disable_fake_quant)), or use "
                    f"torch.compile, which runs every quantizer") from error
        self.__jit_ignored_attributes__ = left_out
        return self

    def reset_quantizers(self):
        for point in self.quant_points:
            quantizer = getattr(self, f'{point}_quantizer', None)
            if quantizer is not None:
                quantizer.reset_parameters()

    def quant_repr(self) -> str:
        parts = []
        for point in self.quant_points:
            quantizer = getattr(self, f'{point}_quantizer', None)
            if quantizer is not None:
                parts.append(f'{point}_bits={getattr(quantizer, "bits", "?")}')
        return ', '.join(parts)

    @classmethod
    def float_kwargs(cls, module: nn.Module) -> dict:
        r"""The constructor arguments that rebuild :obj:`module`."""
        raise TypeError(f"'{cls.__name__}' does not define float_kwargs()")

    @staticmethod
    def message_passing_kwargs(module: nn.Module) -> dict:
        r"""The :class:`~torch_geometric.nn.conv.MessagePassing` arguments
        of :obj:`module` (:obj:`aggr`, :obj:`flow`, :obj:`node_dim`,
        :obj:`decomposed_layers`), for :meth:`float_kwargs`."""
        aggr = module.aggr
        if aggr is not None and aggr == str(module.aggr_module):
            # Built from an Aggregation module (not a name): copy it.
            aggr = copy.deepcopy(module.aggr_module)
        return dict(aggr=aggr, flow=module.flow, node_dim=module.node_dim,
                    decomposed_layers=module.decomposed_layers)

    @classmethod
    def from_float(cls, module: nn.Module, **quantizers):
        r"""The twin of :obj:`module` with its weights and the given
        quantizers (keyword :obj:`<point>=Quantizer`)."""
        twin = cls(**cls.float_kwargs(module),
                   **{f'{p}_quantizer': q
                      for p, q in quantizers.items()})
        params = list(module.parameters()) + list(module.buffers())
        if params:
            twin = twin.to(params[0].device)
        twin.load_state_dict(module.state_dict())
        twin.train(module.training)
        return twin


class QuantAggregatingLayer(QuantLayer):
    r"""The message-passing steps shared by twins whose points are
    :math:`Q_{in}` on the features, :math:`Q_{msg}` on each message,
    :math:`Q_{agg}` on the aggregate and :math:`Q_{out}` on the output
    (:class:`QuantGINConv`, :class:`QuantSAGEConv`), around the float
    parent's steps :obj:`_float_forward`, :obj:`_float_message_and_aggregate`
    and :obj:`_float_aggregate` (:func:`parent_method`), which a subclass
    sets. Sums and means run in :obj:`float64` where :meth:`exact_sums`
    says so (:obj:`_exact_aggregation`, set by the subclass: not for a
    parametric aggregation, whose weights stay :obj:`float32`)."""
    _exact_aggregation: bool = False

    def forward(self, x: Union[Tensor, OptPairTensor], edge_index: Adj,
                size: Size = None) -> Tensor:
        out = self._float_forward(self.quant_input(x), edge_index, size)
        return self.quant('output', out)

    def message(self, x_j: Tensor) -> Tensor:
        return self.quant('message', x_j)

    def message_and_aggregate(self, adj_t: Adj, x: OptPairTensor) -> Tensor:
        if self.quantizes_messages():
            # A fused sparse product never forms the messages Q_msg acts on.
            return self.message_and_aggregate_per_edge(adj_t, x[0])
        if self._exact_aggregation and self.exact_sums() and \
                x[0].dtype == torch.float32:
            # A Tensor here is a torch.sparse adjacency (isinstance, not
            # is_torch_sparse_tensor: TorchScript refines the Union by it).
            if isinstance(adj_t, Tensor):
                adj_t = adj_t.to(torch.float64)
            out = self._float_message_and_aggregate(
                adj_t, (x[0].double(), x[1]))
            return out.float()
        return self._float_message_and_aggregate(adj_t, x)

    def aggregate(self, inputs: Tensor, index: Tensor,
                  ptr: Optional[Tensor] = None,
                  dim_size: Optional[int] = None) -> Tensor:
        if self._exact_aggregation and self.exact_sums() and \
                inputs.dtype == torch.float32:
            # See exact_sums: what the deployed layer computes.
            return self._float_aggregate(inputs.double(), index, ptr,
                                         dim_size).float()
        return self._float_aggregate(inputs, index, ptr, dim_size)

    def update(self, inputs: Tensor) -> Tensor:
        return self.quant('aggregate', inputs)
