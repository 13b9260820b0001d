"""Triton Python model: the preprocess stage in OpenCV (``convert.sh --preprocess-format python``).

For Triton images without the TensorFlow backend (25.03 and newer); needs numpy, Pillow and
opencv-python-headless in the server's Python. ``letterbox.py`` is copied beside this file.
Each request's images are preprocessed one by one, each refused from its header when it has more
pixels than the config's ``max_pixels`` parameter says or is one the TensorFlow form refuses (a GIF,
an animated WebP, another format: ``letterbox.checked_size``); an image that cannot be decoded fails
its request only, as a client error (INVALID_ARGUMENT, HTTP 400).
"""
import json
import os

import cv2
import triton_python_backend_utils as pb_utils
from letterbox import model_settings, preprocess_batch

OUTPUTS = ("image", "meta_affine", "meta_size")


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        parameters = {key: value["string_value"] for key, value in config["parameters"].items()}
        self.size, self.max_pixels = model_settings(parameters)
        # Instances run side by side: share the cores between them rather than oversubscribe.
        instances = sum(int(group.get("count", 1)) for group in config.get("instance_group", [])) or 1
        cv2.setNumThreads(max(1, (os.cpu_count() or 1) // instances))

    def execute(self, requests):
        responses = []
        for request in requests:
            raw = pb_utils.get_input_tensor_by_name(request, "raw_image").as_numpy()
            try:
                columns = preprocess_batch((bytes(encoded) for encoded in raw.reshape(-1)), self.size,
                                           max_pixels=self.max_pixels)
            except ValueError as error:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(
                    f"detection-preprocess: {error}", pb_utils.TritonError.INVALID_ARG)))
                continue
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(n, c) for n, c in zip(OUTPUTS, columns)]))
        return responses
