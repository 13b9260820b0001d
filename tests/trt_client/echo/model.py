"""A Triton Python model that answers each item of ``data`` (BYTES) with the item itself and its
length: the server's own view of the bytes a client sent, to check that none were lost. The
config's ``delay_ms`` parameter makes it slow, for requests that stay in flight; ``load_delay_ms``
makes it slow to load, as a real model is, for a server that takes a while to come back."""
import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        parameters = json.loads(args["model_config"]).get("parameters", {})
        self.delay = float(parameters.get("delay_ms", {}).get("string_value", "0")) / 1000
        time.sleep(float(parameters.get("load_delay_ms", {}).get("string_value", "0")) / 1000)

    def execute(self, requests):
        responses = []
        for request in requests:
            time.sleep(self.delay)
            data = pb_utils.get_input_tensor_by_name(request, "data").as_numpy()
            lengths = np.vectorize(len, otypes=[np.int64])(data) if data.size else np.zeros(data.shape, np.int64)
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("echo", data.astype(object)), pb_utils.Tensor("length", lengths)]))
        return responses
