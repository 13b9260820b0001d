"""Triton Python model: the preprocess stage on the GPU (``convert.sh --preprocess-format gpu``).

``gpu_preprocess.py`` and ``letterbox.py`` are copied beside this file; needs torch, torchvision,
OpenCV and Pillow in the server's Python. All images of all the requests Triton hands over are
decoded together (nvJPEG batches them, ``gpu_preprocess.prepare``); ``image`` leaves as a CUDA tensor
by DLPack, so the network receives it without a host copy. An image that cannot be read fails its own
request only, as a client error (INVALID_ARGUMENT). ``image`` is FP16 where its config says TYPE_FP16
(for a network that runs in FP16: half the bytes).
"""
import json

import torch
import triton_python_backend_utils as pb_utils
from gpu_preprocess import OUTPUTS, RAW_IMAGE, prepare, warm_up
from torch.utils.dlpack import to_dlpack


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.parameters = {key: value["string_value"] for key, value in config["parameters"].items()}
        image = next(output for output in config["output"] if output["name"] == OUTPUTS[0])
        self.dtype = torch.float16 if image["data_type"] == "TYPE_FP16" else torch.float32
        gpu = args.get("model_instance_kind") == "GPU"
        self.device = torch.device(f"cuda:{args['model_instance_device_id']}" if gpu else "cpu")
        if gpu:  # the process's context on its instance's GPU alone
            torch.cuda.set_device(self.device)
        warm_up(self.device, self.parameters)
        if gpu:
            torch.cuda.empty_cache()  # what the warm-up cached need not stay reserved at rest

    def execute(self, requests):
        feeds = [{RAW_IMAGE: pb_utils.get_input_tensor_by_name(request, RAW_IMAGE).as_numpy()} for request in requests]
        responses = []
        for prepared in prepare(feeds, self.device, self.parameters, self.dtype):
            if isinstance(prepared, Exception):
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(
                    f"detection-preprocess: {prepared}", pb_utils.TritonError.INVALID_ARG)))
                continue
            image, meta_affine, meta_size = (prepared[name] for name in OUTPUTS)
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor.from_dlpack(OUTPUTS[0], to_dlpack(image.contiguous())),
                pb_utils.Tensor(OUTPUTS[1], meta_affine), pb_utils.Tensor(OUTPUTS[2], meta_size)]))
        return responses
