import numpy as np
import pytest
import tensorflow as tf
from tritonclient.grpc import model_config_pb2 as pb

from trtis import config
from trtis.export import tensorflow as trtis_tf


def scale_and_sum(x):
    return x * 2.0, tf.reduce_sum(x, axis=1)


def test_frozen_graph_carries_the_config_names_and_runs():
    graph = trtis_tf.freeze(scale_and_sum, [tf.TensorSpec([None, 3], tf.float32, name="x")], ["doubled", "total"])
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    doubled, total = trtis_tf.run(graph, {"x": x}, ["doubled", "total"])
    np.testing.assert_array_equal(doubled, x * 2)
    np.testing.assert_array_equal(total, x.sum(axis=1))
    inputs = trtis_tf.io_tensors(graph, ["x"])
    outputs = trtis_tf.io_tensors(graph, ["doubled", "total"])
    assert [(t.name, list(t.dims)) for t in inputs + outputs] == [("x", [3]), ("doubled", [3]), ("total", [])]
    assert config.triton_dtype(outputs[0].dtype) == pb.TYPE_FP32


def test_unnamed_inputs_and_name_clashes_are_refused():
    with pytest.raises(ValueError, match="needs a name"):
        trtis_tf.freeze(scale_and_sum, [tf.TensorSpec([None, 3], tf.float32)], ["a", "b"])
    with pytest.raises(ValueError, match="returns 2 tensors but 1"):
        trtis_tf.freeze(scale_and_sum, [tf.TensorSpec([None, 3], tf.float32, name="x")], ["a"])
    with pytest.raises(ValueError, match=r"\['x'\] are already node names"):
        trtis_tf.freeze(scale_and_sum, [tf.TensorSpec([None, 3], tf.float32, name="x")], ["x", "b"])
