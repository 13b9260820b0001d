"""Tiny real models for every runnable platform, chained in an ensemble, with in-process references.

text (TYPE_STRING) --tensorflow--> features [number, length] --onnx--> hidden[3] --torchscript--> scores[2]
A text that is not a number makes the TensorFlow step fail at run time, which the tests use as
a request that is well-formed for the server but bad for the model.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import tensorflow as tf
import torch

from trtis import config, repository
from trtis.export import tensorflow as trtis_tf

MAX_BATCH = 8
BATCHING = config.DynamicBatching(max_queue_delay_us=20_000)


def _text_features(text):
    flat = tf.reshape(text, [-1])
    return tf.stack([tf.strings.to_number(flat), tf.cast(tf.strings.length(flat), tf.float32)], axis=1)


@dataclass
class TinyModels:
    root: Path
    graph_def: tf.compat.v1.GraphDef
    onnx_bytes: bytes
    head: torch.jit.ScriptModule
    ensemble: str = "tiny-chain"

    def features(self, texts: np.ndarray) -> np.ndarray:
        return trtis_tf.run(self.graph_def, {"text": texts}, ["features"])[0]

    def hidden(self, features: np.ndarray) -> np.ndarray:
        session = ort.InferenceSession(self.onnx_bytes, providers=["CPUExecutionProvider"])
        return session.run(["hidden"], {"features": features})[0]

    def scores(self, texts: np.ndarray) -> np.ndarray:
        """The whole chain, in process: what the ensemble must answer."""
        with torch.inference_mode():
            return self.head(torch.from_numpy(self.hidden(self.features(texts)))).numpy()


def texts(*values) -> np.ndarray:
    """A batch of TYPE_STRING inputs, shape [batch, 1]."""
    return np.array([[str(v).encode()] for v in values], dtype=object)


def build(root: Path) -> TinyModels:
    torch.manual_seed(0)
    graph_def = trtis_tf.freeze(_text_features, [tf.TensorSpec([None, 1], tf.string, name="text")], ["features"])
    affine = torch.nn.Linear(2, 3)
    onnx_file = io.BytesIO()
    torch.onnx.export(affine, (torch.zeros(1, 2),), onnx_file, input_names=["features"], output_names=["hidden"],
                      dynamic_axes={"features": {0: "batch"}, "hidden": {0: "batch"}}, dynamo=False)
    head = torch.jit.script(torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU()).eval())
    head_file = io.BytesIO()
    torch.jit.save(head, head_file)

    text_model = config.model_config(
        "tiny-text", platform="tensorflow_graphdef", max_batch_size=MAX_BATCH, dynamic_batching=BATCHING,
        inputs=trtis_tf.io_tensors(graph_def, ["text"]), outputs=trtis_tf.io_tensors(graph_def, ["features"]))
    affine_model = config.model_config(
        "tiny-affine", platform="onnxruntime_onnx", max_batch_size=MAX_BATCH, dynamic_batching=BATCHING,
        inputs=[config.Tensor("features", np.float32, [2])], outputs=[config.Tensor("hidden", np.float32, [3])],
        parameters={"intra_op_thread_count": 1})
    head_model = config.model_config(
        "tiny-head", platform="pytorch_libtorch", max_batch_size=MAX_BATCH, dynamic_batching=BATCHING,
        inputs=[config.Tensor("hidden", torch.float32, [3])], outputs=[config.Tensor("scores", torch.float32, [2])])
    chain = config.ensemble_config("tiny-chain", [config.Step(text_model), config.Step(affine_model), config.Step(head_model)])
    repository.write_repository(root, [
        repository.Model(text_model, graph_def.SerializeToString()),
        repository.Model(affine_model, onnx_file.getvalue()),
        repository.Model(head_model, head_file.getvalue()),
        repository.Model(chain),
    ])
    return TinyModels(root, graph_def, onnx_file.getvalue(), head)
