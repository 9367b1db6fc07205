"""minigrad: recurrent cells as graphs of typed nodes, with BPTT derived from local derivatives.

Public API (re-exported from the private-by-convention modules below):

* nodes (``minigrad.nodes``): ``Node`` and the built-in node types;
* cells (``minigrad.cell``): ``CellBuilder``, ``Cell``, ``Ref`` and one
  lowercase function per node type (``sigmoid``, ``matmul``, ...);
* unrolling (``minigrad.unroll``): ``unroll``, ``SHARED``;
* planning and execution (``minigrad.plan``, which binds plans through the
  runtime, ``minigrad.runtime``): ``compile_plan``, ``Plan``, ``Run``, ``Gradients``;
* graph passes (``minigrad.passes``): ``DEFAULT_PASSES``, ``classify``;
* explanations and drawings (``minigrad.explain``, ``minigrad.dot``):
  ``explain``, ``explain_all``, ``cell_to_dot``, ``unrolled_to_dot``,
  ``write_graph``;
* gradient checking (``minigrad.check``): ``gradcheck``,
  ``gradcheck_node``, ``gradcheck_cell``, ``check_grads``;
* noise inputs (``minigrad.noise``): ``draw`` gives dropout and zoneout masks
  (training) or their evaluation values, and builder rewrites add them to any cell;
* initialisers (``minigrad.init``) and errors (``minigrad.errors``).
"""

from minigrad import init, noise, serialize
from minigrad.cell import (
    Cell,
    CellBuilder,
    InputSpec,
    NoiseSpec,
    OpSpec,
    ParamSpec,
    Ref,
    StateSpec,
    add,
    affine,
    concat,
    dropout,
    gru_update,
    l2_loss,
    matmul,
    mul,
    neg_sigmoid,
    one_minus,
    relu,
    scale,
    sigmoid,
    sigmoid_bce,
    slice_,
    softmax_cross_entropy,
    sub,
    tanh,
    zoneout,
)
from minigrad.check import (
    GradcheckResult,
    check_grads,
    gradcheck,
    gradcheck_cell,
    gradcheck_node,
)
from minigrad.dot import (
    GraphvizError,
    GraphvizNotFound,
    cell_to_dot,
    unrolled_to_dot,
    write_graph,
)
from minigrad.errors import (
    ArgumentError,
    ArgumentTypeError,
    DTypeError,
    GradcheckError,
    GraphError,
    MinigradError,
    NodeContractError,
    NonFiniteError,
    ShapeError,
)
from minigrad.explain import explain, explain_all
from minigrad.nodes import (
    Add,
    Affine,
    Concat,
    Dropout,
    GRUUpdate,
    Identity,
    L2Loss,
    MatMul,
    Mul,
    NegSigmoid,
    Node,
    OneMinus,
    ReLU,
    Scale,
    Sigmoid,
    SigmoidBCE,
    Slice,
    SoftmaxCrossEntropy,
    Sub,
    Tanh,
    Zoneout,
)
from minigrad.passes import ALL_PASSES, DEFAULT_PASSES, classify
from minigrad.plan import BufRef, Gradients, Instr, Plan, Run, compile_plan
from minigrad.program import MODES, Program, compile, plan_of
from minigrad.unroll import SHARED, unroll

__version__ = "0.1.0"

__all__ = [
    "ALL_PASSES",
    "DEFAULT_PASSES",
    "MODES",
    "SHARED",
    "Add",
    "Affine",
    "ArgumentError",
    "ArgumentTypeError",
    "BufRef",
    "Cell",
    "CellBuilder",
    "Concat",
    "DTypeError",
    "Dropout",
    "GRUUpdate",
    "GradcheckError",
    "GradcheckResult",
    "Gradients",
    "GraphError",
    "GraphvizError",
    "GraphvizNotFound",
    "Identity",
    "InputSpec",
    "Instr",
    "L2Loss",
    "MatMul",
    "MinigradError",
    "Mul",
    "NegSigmoid",
    "Node",
    "NodeContractError",
    "NoiseSpec",
    "NonFiniteError",
    "OneMinus",
    "OpSpec",
    "ParamSpec",
    "Plan",
    "Program",
    "ReLU",
    "Ref",
    "Run",
    "Scale",
    "ShapeError",
    "Sigmoid",
    "SigmoidBCE",
    "Slice",
    "SoftmaxCrossEntropy",
    "StateSpec",
    "Sub",
    "Tanh",
    "Zoneout",
    "__version__",
    "add",
    "affine",
    "cell_to_dot",
    "check_grads",
    "classify",
    "compile",
    "compile_plan",
    "concat",
    "dropout",
    "explain",
    "explain_all",
    "gradcheck",
    "gradcheck_cell",
    "gradcheck_node",
    "gru_update",
    "init",
    "l2_loss",
    "matmul",
    "mul",
    "neg_sigmoid",
    "noise",
    "one_minus",
    "plan_of",
    "relu",
    "scale",
    "serialize",
    "sigmoid",
    "sigmoid_bce",
    "slice_",
    "softmax_cross_entropy",
    "sub",
    "tanh",
    "unroll",
    "unrolled_to_dot",
    "write_graph",
    "zoneout",
]
