"""Triton Python model: the preprocess stage on the GPU (``convert.sh --preprocess-format gpu``).

``gpu_preprocess.py`` and ``letterbox.py`` are copied beside this file; needs torch, torchvision,
OpenCV and Pillow in the server's Python. All images of all the requests Triton hands over are
decoded together (nvJPEG batches them); ``image`` leaves as a CUDA tensor by DLPack, so the network
receives it without a host copy. An image that cannot be read fails its own request only, as a
client error (INVALID_ARGUMENT). ``image`` is FP16 where its config says TYPE_FP16 (for a network
that runs in FP16: half the bytes).
"""
import json

import torch
import triton_python_backend_utils as pb_utils
from gpu_preprocess import preprocess
from letterbox import model_settings
from torch.utils.dlpack import to_dlpack

OUTPUTS = ("image", "meta_affine", "meta_size")


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.size, self.max_pixels = model_settings(config)
        image = next(output for output in config["output"] if output["name"] == OUTPUTS[0])
        self.dtype = torch.float16 if image["data_type"] == "TYPE_FP16" else torch.float32
        gpu = args.get("model_instance_kind") == "GPU"
        self.device = torch.device(f"cuda:{args['model_instance_device_id']}" if gpu else "cpu")

    def execute(self, requests):
        images, owned = [], []  # owned[r]: the indices in ``images`` of request r's images
        for request in requests:
            raw = pb_utils.get_input_tensor_by_name(request, "raw_image").as_numpy().reshape(-1)
            owned.append(range(len(images), len(images) + len(raw)))
            images += [bytes(encoded) for encoded in raw]
        errors, image, meta_affine, meta_size = preprocess(images, self.size, self.device, self.max_pixels)
        if image is not None:
            image = image.to(self.dtype)  # once for the batch
        good = [n for n, error in enumerate(errors) if error is None]
        rows = {n: row for row, n in enumerate(good)}
        responses = []
        for mine in owned:
            failed = [errors[n] for n in mine if errors[n] is not None]
            if failed:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(
                    f"detection-preprocess: {failed[0]}", pb_utils.TritonError.INVALID_ARG)))
                continue
            picks = [rows[n] for n in mine]
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor.from_dlpack(OUTPUTS[0], to_dlpack(image[picks].contiguous())),
                pb_utils.Tensor(OUTPUTS[1], meta_affine[picks]), pb_utils.Tensor(OUTPUTS[2], meta_size[picks])]))
        return responses
