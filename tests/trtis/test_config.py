import numpy as np
import onnx
import pytest
import tensorflow as tf
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from trtis import config


@pytest.mark.parametrize("dtype, expected", [
    (np.float32, pb.TYPE_FP32), (np.dtype("int64"), pb.TYPE_INT64), (np.uint8, pb.TYPE_UINT8),
    (np.object_, pb.TYPE_STRING), (np.bytes_, pb.TYPE_STRING), (bool, pb.TYPE_BOOL),
    (torch.float16, pb.TYPE_FP16), (torch.int32, pb.TYPE_INT32), (torch.bfloat16, pb.TYPE_BF16),
    (tf.float32, pb.TYPE_FP32), (tf.string, pb.TYPE_STRING), (tf.int8, pb.TYPE_INT8),
    (onnx.TensorProto.FLOAT, pb.TYPE_FP32), (onnx.TensorProto.INT64, pb.TYPE_INT64),
    ("TYPE_FP32", pb.TYPE_FP32), ("FP16", pb.TYPE_FP16), ("BYTES", pb.TYPE_STRING),
])
def test_data_types_map_from_every_framework(dtype, expected):
    assert config.triton_dtype(dtype) == expected


def test_unknown_data_type_is_refused_by_name():
    with pytest.raises(ValueError, match="FLOAT99"):
        config.triton_dtype("FLOAT99")


def full_config() -> pb.ModelConfig:
    return config.model_config(
        "net", platform="onnxruntime_onnx", max_batch_size=16,
        inputs=[config.Tensor("image", np.float32, [3, -1, -1])],
        outputs=[config.Tensor("hm", np.float32, [80, 128, 128]),
                 config.Tensor("flat", np.float32, [4], reshape=[2, 2], label_filename="labels.txt")],
        instances=[config.Instances(count=2, kind="gpu", gpus=[0, 1]), config.Instances(kind="cpu")],
        dynamic_batching=config.DynamicBatching(preferred_batch_sizes=[4, 8], max_queue_delay_us=500),
        parameters={"intra_op_thread_count": 2},
    )


def test_config_round_trips_through_text_format():
    original = full_config()
    text = config.to_text(original)
    assert config.from_text(text) == original
    assert 'platform: "onnxruntime_onnx"' in text and "KIND_GPU" in text and "preferred_batch_size: 4" in text


def test_config_fields_land_in_the_official_schema():
    built = full_config()
    assert built.instance_group[0].gpus == [0, 1] and built.instance_group[0].count == 2
    assert built.instance_group[1].kind == pb.ModelInstanceGroup.KIND_CPU
    assert built.output[1].reshape.shape == [2, 2] and built.output[1].label_filename == "labels.txt"
    assert built.dynamic_batching.max_queue_delay_microseconds == 500
    queue = built.dynamic_batching.default_queue_policy  # bounded unless asked otherwise
    assert (queue.max_queue_size, queue.default_timeout_microseconds) == (64, 10_000_000)
    assert queue.timeout_action == pb.ModelQueuePolicy.REJECT and queue.allow_timeout_override
    assert built.parameters["intra_op_thread_count"].string_value == "2"


def test_platform_or_backend_exactly_one():
    with pytest.raises(ValueError, match="exactly one"):
        config.model_config("m", platform="onnxruntime_onnx", backend="python")
    with pytest.raises(ValueError, match="instance kind"):
        config.model_config("m", platform="onnxruntime_onnx", instances=[config.Instances(kind="tpu")])
    for wrong in (None, -1):  # protobuf would write None as 0: a model without a batch axis
        with pytest.raises(ValueError, match="max_batch_size must be 0 .no batch axis. or more"):
            config.model_config("m", platform="onnxruntime_onnx", max_batch_size=wrong)


def chain_models():
    pre = config.model_config("pre", platform="tensorflow_graphdef", max_batch_size=8,
                              inputs=[config.Tensor("raw", np.object_, [1])],
                              outputs=[config.Tensor("image", np.float32, [3, 8, 8]), config.Tensor("meta", np.float32, [6])])
    net = config.model_config("net", platform="onnxruntime_onnx", max_batch_size=4,
                              inputs=[config.Tensor("input", np.float32, [3, 8, 8])],
                              outputs=[config.Tensor("hm", np.float32, [2, 2, 2])])
    post = config.model_config("post", platform="onnxruntime_onnx", max_batch_size=8,
                               inputs=[config.Tensor("hm", np.float32, [2, 2, 2]), config.Tensor("meta", np.float32, [6])],
                               outputs=[config.Tensor("boxes", np.float32, [10, 4])])
    return pre, net, post


def test_ensemble_is_built_from_a_chain_description():
    pre, net, post = chain_models()
    ensemble = config.ensemble_config("detection", [config.Step(pre), config.Step(net, inputs={"input": "image"}), config.Step(post)])
    assert [t.name for t in ensemble.input] == ["raw"]
    assert ensemble.input[0].data_type == pb.TYPE_STRING and list(ensemble.input[0].dims) == [1]
    assert [t.name for t in ensemble.output] == ["boxes"]
    assert ensemble.max_batch_size == 4, "an ensemble's max_batch_size may not exceed any step's"
    steps = ensemble.ensemble_scheduling.step
    assert [s.model_name for s in steps] == ["pre", "net", "post"]
    assert dict(steps[1].input_map) == {"input": "image"} and dict(steps[2].input_map) == {"hm": "hm", "meta": "meta"}
    assert text_format.Parse(config.to_text(ensemble), pb.ModelConfig()) == ensemble


def test_ensemble_output_must_be_produced():
    pre, net, post = chain_models()
    with pytest.raises(ValueError, match="'scores' is produced by no step"):
        config.ensemble_config("e", [config.Step(pre)], outputs=["scores"])


def test_warmup_batch_sizes_become_model_warmup_on_zeros_for_every_input():
    built = config.model_config("net", platform="pytorch_libtorch", max_batch_size=4,
                                inputs=[config.Tensor("image", np.float32, [3, 8, 8]),
                                        config.Tensor("size", np.int32, [2])],
                                outputs=[config.Tensor("out", np.float32, [1])], warmup_batch_sizes=range(1, 5))
    assert [w.batch_size for w in built.model_warmup] == [1, 2, 3, 4]
    image = built.model_warmup[2].inputs["image"]
    assert image.zero_data and image.data_type == pb.TYPE_FP32 and list(image.dims) == [3, 8, 8]
    assert built.model_warmup[0].inputs["size"].data_type == pb.TYPE_INT32
    assert config.from_text(config.to_text(built)) == built


def test_a_free_dim_is_warmed_at_the_size_warmup_inputs_give():
    """Triton refuses to warm up a variable dimension: the config says so before Triton does."""
    common = dict(platform="pytorch_libtorch", max_batch_size=4, outputs=[config.Tensor("out", np.float32, [1])],
                  inputs=[config.Tensor("ids", np.int64, [-1])], warmup_batch_sizes=[1])
    with pytest.raises(ValueError, match=r"inputs \['ids'\] have free dims \(-1\).*give warmup_inputs"):
        config.model_config("encoder", **common)
    built = config.model_config("encoder", **common, warmup_inputs=[config.Tensor("ids", np.int64, [12])])
    assert list(built.input[0].dims) == [-1] and list(built.model_warmup[0].inputs["ids"].dims) == [12]


def test_compiled_gpu_networks_run_a_few_batch_sizes():
    assert config.batch_buckets(64) == [1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64]
    assert config.batch_buckets(10) == [1, 2, 4, 6, 8, 10] and config.batch_buckets(1) == [1]
    assert config.batch_buckets_text(32) == "1,2,4,6,8,12,16,24,32"
    # On a CPU nothing is padded: a graph for a batch of one and one for the rest.
    assert config.warm_batch_sizes(8) == "1,2" and config.warm_batch_sizes(1) == "1"


def test_class_names_are_written_where_the_client_reads_them():
    from trt_client.labels import from_parameters

    model = config.model_config("m", platform="onnxruntime_onnx", inputs=[config.Tensor("x", np.float32, [3])],
                                outputs=[config.Tensor("y", np.float32, [2])])
    named = config.with_class_names(model, ["cat", "dog"])
    parameters = {key: value.string_value for key, value in named.parameters.items()}
    assert from_parameters("m", parameters) == ("cat", "dog")
    assert "class_names" not in model.parameters  # the given config is left as it was


def test_a_model_spec_refuses_an_unknown_field_by_name():
    with pytest.raises(TypeError, match="max_batch"):
        config.model_config("m", platform="onnxruntime_onnx", max_batch=4)
