"""Triton backend `tensorflow` (platform tensorflow_graphdef): a frozen GraphDef in a TF session.

Feeds and fetches the tensors named in the config (``<name>:0``), so the graph's placeholders
and outputs must carry the config's names (``trtis.tensorflow.freeze`` names them).
"""
from __future__ import annotations

from pathlib import Path

from trtis.serving.batched_model import BatchedModel, Feed


def _cause(message: str) -> str:
    """The line of a TensorFlow error that says what went wrong (it follows a traceback header)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    causes = [line for line in lines if not line.startswith(("Graph execution error", "Detected at node", "Node:", "[["))]
    cause = causes[-1] if causes else lines[-1]
    if cause.startswith("assertion failed: [") and "]" in cause:  # tf.debugging.assert_*: keep its message
        cause = cause[len("assertion failed: ["):cause.index("]")]
    return cause


class TritonPythonModel(BatchedModel):
    def load(self, path: Path, device: str, parameters: dict) -> None:
        import tensorflow as tf

        graph_def = tf.compat.v1.GraphDef()
        graph_def.ParseFromString(path.read_bytes())
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf.compat.v1.import_graph_def(graph_def, name="")
        nodes = {node.name for node in graph_def.node}
        missing = [name for name in [*self.inputs, *self.outputs] if name not in nodes]
        if missing:
            placeholders = [n.name for n in graph_def.node if n.op == "Placeholder"]
            raise ValueError(f"model {self.name!r}: graph {path.name} has no tensors {missing} "
                             f"named in config.pbtxt (its placeholders: {placeholders})")
        session_config = tf.compat.v1.ConfigProto(
            intra_op_parallelism_threads=int(parameters.get("intra_op_thread_count", 0)),
            inter_op_parallelism_threads=int(parameters.get("inter_op_thread_count", 0)),
        )
        self.session = tf.compat.v1.Session(graph=self.graph, config=session_config)
        self.fetches = [f"{name}:0" for name in self.outputs]
        self.op_error = tf.errors.OpError

    def run(self, feed: Feed) -> dict:
        try:
            values = self.session.run(self.fetches, {f"{name}:0": value for name, value in feed.items()})
        except self.op_error as error:
            raise ValueError(f"model {self.name!r}: {_cause(error.message)}") from None
        return dict(zip(self.outputs, values))

    def finalize(self) -> None:
        self.session.close()
