import numpy as np
import pytest
from tritonclient.grpc import model_config_pb2 as pb

from trtis import config, repository
from trtis.repository import Model, RepositoryError


def models():
    pre = config.model_config("pre", platform="tensorflow_graphdef", max_batch_size=8,
                              inputs=[config.Tensor("raw", np.object_, [1])],
                              outputs=[config.Tensor("image", np.float32, [3, -1, -1]), config.Tensor("meta", np.float32, [6])])
    net = config.model_config("net", platform="onnxruntime_onnx", max_batch_size=8,
                              inputs=[config.Tensor("image", np.float32, [3, 64, 64])],
                              outputs=[config.Tensor("hm", np.float32, [2, 16, 16])])
    post = config.model_config("post", platform="onnxruntime_onnx", max_batch_size=8,
                               inputs=[config.Tensor("hm", np.float32, [2, 16, 16]), config.Tensor("meta", np.float32, [6])],
                               outputs=[config.Tensor("boxes", np.float32, [10, 4])])
    return {"pre": pre, "net": net, "post": post}


def ensemble(parts):
    return config.ensemble_config("det", [config.Step(parts[n]) for n in ("pre", "net", "post")])


def check(parts, ens):
    repository.validate([*parts.values(), ens])


def test_a_consistent_repository_validates():
    parts = models()
    check(parts, ensemble(parts))


def test_missing_step_model_is_named():
    parts = models()
    ens = ensemble(parts)
    del parts["net"]
    with pytest.raises(RepositoryError, match="step 1: model 'net' is not in the repository"):
        check(parts, ens)


def test_data_type_mismatch_names_tensor_and_models():
    parts = models()
    ens = ensemble(parts)
    parts["post"].input[1].data_type = pb.TYPE_FP16
    with pytest.raises(RepositoryError, match="tensor 'meta' from model 'pre' into model 'post': data type TYPE_FP32 != TYPE_FP16"):
        check(parts, ens)


def test_dims_mismatch_is_reported_and_wildcards_agree():
    parts = models()
    ens = ensemble(parts)
    parts["post"].input[0].dims[:] = [2, 32, 32]
    with pytest.raises(RepositoryError, match=r"tensor 'hm' .* dims \[2, 16, 16\] != \[2, 32, 32\]"):
        check(parts, ens)


def test_unmapped_model_input_is_reported():
    parts = models()
    ens = ensemble(parts)
    del ens.ensemble_scheduling.step[2].input_map["meta"]
    with pytest.raises(RepositoryError, match="input 'meta' of model 'post' is not mapped"):
        check(parts, ens)


def test_unknown_tensor_in_a_map_is_reported():
    parts = models()
    ens = ensemble(parts)
    ens.ensemble_scheduling.step[1].input_map["imgae"] = "image"
    with pytest.raises(RepositoryError, match="model 'net' has no input 'imgae'"):
        check(parts, ens)


def test_consumed_but_unproduced_tensor_is_reported():
    parts = models()
    ens = ensemble(parts)
    ens.ensemble_scheduling.step[2].input_map["hm"] = "heatmap"
    with pytest.raises(RepositoryError, match="tensor 'heatmap' is consumed but produced by no step"):
        check(parts, ens)


def test_unused_ensemble_input_and_unused_product_are_reported():
    parts = models()
    ens = ensemble(parts)
    ens.input.add(name="extra", data_type=pb.TYPE_FP32, dims=[1])
    with pytest.raises(RepositoryError, match="input 'extra' is used by no step"):
        check(parts, ens)
    parts["net"].output.add(name="wh", data_type=pb.TYPE_FP32, dims=[2])
    ens = config.ensemble_config("det", [config.Step(parts[n]) for n in ("pre", "net", "post")], outputs=["boxes"])
    with pytest.raises(RepositoryError, match="tensor 'wh' is produced but never used"):
        check(parts, ens)


def test_cycle_is_reported():
    a = config.model_config("a", platform="onnxruntime_onnx", inputs=[config.Tensor("x", np.float32, [1]), config.Tensor("y", np.float32, [1])],
                            outputs=[config.Tensor("z", np.float32, [1])])
    b = config.model_config("b", platform="onnxruntime_onnx", inputs=[config.Tensor("z", np.float32, [1])],
                            outputs=[config.Tensor("y", np.float32, [1]), config.Tensor("out", np.float32, [1])])
    ens = pb.ModelConfig(name="loop", platform="ensemble")
    ens.input.add(name="x", data_type=pb.TYPE_FP32, dims=[1])
    ens.output.add(name="out", data_type=pb.TYPE_FP32, dims=[1])
    ens.ensemble_scheduling.step.add(model_name="a", input_map={"x": "x", "y": "y"}, output_map={"z": "z"})
    ens.ensemble_scheduling.step.add(model_name="b", input_map={"z": "z"}, output_map={"y": "y", "out": "out"})
    with pytest.raises(RepositoryError, match=r"cycle through models \['a', 'b'\]"):
        repository.validate([a, b, ens])


def test_ensemble_batch_larger_than_a_step_is_reported():
    parts = models()
    ens = ensemble(parts)
    parts["net"].max_batch_size = 4
    with pytest.raises(RepositoryError, match="max_batch_size 8 exceeds 4 of step model 'net'"):
        check(parts, ens)


def test_preferred_batch_size_over_the_max_is_reported():
    parts = models()
    parts["net"].dynamic_batching.preferred_batch_size.extend([4, 8, 16])
    with pytest.raises(RepositoryError, match=r"model 'net': preferred batch sizes \[16\] exceed its max_batch_size 8"):
        check(parts, ensemble(parts))


def test_tensor_produced_twice_is_reported():
    parts = models()
    ens = ensemble(parts)
    ens.ensemble_scheduling.step[1].output_map["hm"] = "meta"
    with pytest.raises(RepositoryError, match="tensor 'meta' is produced twice"):
        check(parts, ens)


def test_write_repository_lays_out_versions_files_and_configs(tmp_path):
    parts = models()
    written = repository.write_repository(tmp_path, [
        Model(parts["pre"], b"graph"), Model(parts["net"], b"onnx", version=3),
        Model(parts["post"], b"post", files={"labels.txt": b"a\nb\n"}), Model(ensemble(parts))])
    assert [p.name for p in written] == ["pre", "net", "post", "det"]
    assert (tmp_path / "pre/1/model.graphdef").read_bytes() == b"graph"
    assert (tmp_path / "net/3/model.onnx").read_bytes() == b"onnx"
    assert (tmp_path / "post/labels.txt").read_text() == "a\nb\n"
    assert (tmp_path / "det/1").is_dir() and not any((tmp_path / "det/1").iterdir())
    assert repository.read_configs(tmp_path)["net"] == parts["net"]


def test_rewriting_a_model_replaces_it_whole_and_leaves_no_temporaries(tmp_path):
    parts = models()
    repository.write_repository(tmp_path, [Model(p, b"v1") for p in parts.values()] + [Model(ensemble(parts))])
    (tmp_path / "net/1/stale.bin").write_bytes(b"old")
    repository.write_repository(tmp_path, [Model(parts["net"], b"v2")])
    assert (tmp_path / "net/1/model.onnx").read_bytes() == b"v2"
    assert not (tmp_path / "net/1/stale.bin").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["det", "net", "post", "pre"]


def test_invalid_repository_is_not_written(tmp_path):
    parts = models()
    ens = ensemble(parts)
    parts["net"].input[0].data_type = pb.TYPE_FP16
    with pytest.raises(RepositoryError):
        repository.write_repository(tmp_path, [*(Model(p, b"x") for p in parts.values()), Model(ens)])
    assert list(tmp_path.iterdir()) == []


def test_existing_models_take_part_in_the_check(tmp_path):
    parts = models()
    repository.write_repository(tmp_path, [Model(p, b"x") for p in parts.values()])
    repository.write_repository(tmp_path, [Model(ensemble(parts))])
    broken = ensemble(parts)
    broken.ensemble_scheduling.step[0].model_name = "missing"
    with pytest.raises(RepositoryError, match="'missing' is not in the repository"):
        repository.write_repository(tmp_path, [Model(broken)])


def test_platform_without_a_default_file_name_needs_one(tmp_path):
    odd = config.model_config("odd", backend="custom", inputs=[config.Tensor("x", np.float32, [1])],
                              outputs=[config.Tensor("y", np.float32, [1])])
    with pytest.raises(RepositoryError, match="no default file name"):
        repository.write_repository(tmp_path, [Model(odd, b"x")])
    assert list(tmp_path.iterdir()) == []
