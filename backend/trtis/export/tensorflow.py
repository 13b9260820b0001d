"""TensorFlow function -> frozen GraphDef whose tensors carry the config's names.

A frozen ``tf.function`` names its outputs ``Identity``, ``Identity_1``...; Triton's TensorFlow
backend feeds and fetches by the names in ``config.pbtxt``, so the outputs are renamed here and
the inputs take the names of the ``tf.TensorSpec``s.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

from trtis import quiet
from trtis.config import Tensor

tf = quiet.import_tensorflow()
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2  # noqa: E402


def freeze(function: Callable, input_specs: Sequence[tf.TensorSpec], output_names: Sequence[str]) -> tf.compat.v1.GraphDef:
    """Freeze ``function`` (returning one tensor or a sequence, in ``output_names`` order)."""
    unnamed = [spec for spec in input_specs if not spec.name]
    if unnamed:
        raise ValueError(f"every input TensorSpec needs a name (the config's input name); unnamed: {unnamed}")
    concrete = tf.function(function).get_concrete_function(*input_specs)
    frozen = convert_variables_to_constants_v2(concrete)
    graph_def = frozen.graph.as_graph_def()
    outputs = frozen.outputs
    if len(outputs) != len(output_names):
        raise ValueError(f"the function returns {len(outputs)} tensors but {len(output_names)} output names were given")
    taken = {node.name for node in graph_def.node}
    clashes = [name for name in output_names if name in taken]
    if clashes:
        raise ValueError(f"output names {clashes} are already node names in the graph; choose others")
    for name, tensor in zip(output_names, outputs):
        node = graph_def.node.add(name=name, op="Identity", input=[tensor.name.removesuffix(":0") if tensor.name.endswith(":0") else tensor.name])
        node.attr["T"].type = tensor.dtype.as_datatype_enum
    return graph_def


def io_tensors(graph_def: tf.compat.v1.GraphDef, names: Sequence[str], batched: bool = True) -> list[Tensor]:
    """Config tensors (name, data type, dims) for the named nodes of a frozen graph."""
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    tensors = []
    for name in names:
        tensor = graph.get_tensor_by_name(f"{name}:0")
        dims = [-1 if d is None else d for d in tensor.shape.as_list()]
        tensors.append(Tensor(name, tensor.dtype, dims[1:] if batched else dims))
    return tensors


def run(graph_def: tf.compat.v1.GraphDef, feed: dict, fetch: Sequence[str]) -> list:
    """Run a frozen graph in a session, as the server's backend does (to check it in-process)."""
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    with tf.compat.v1.Session(graph=graph) as session:
        return session.run([f"{n}:0" for n in fetch], {f"{k}:0": v for k, v in feed.items()})
