"""A Triton Python model shaped like a detector: each item of ``data`` is text with one detection per
line, ``class score x1 y1 x2 y2``, answered as ``boxes`` [5, 4], ``scores`` [5] and ``classes`` [5]
in the order written, padded with score 0. Text that is not such lines fails that request only."""
import numpy as np
import triton_python_backend_utils as pb_utils

SLOTS = 5


def detect(item: bytes):
    boxes, scores, classes = np.zeros((SLOTS, 4), np.float32), np.zeros(SLOTS, np.float32), np.zeros(SLOTS, np.int32)
    lines = [line.split() for line in item.decode().splitlines() if line.strip()]
    if len(lines) > SLOTS or any(len(fields) != 6 for fields in lines):
        raise ValueError(f"expected at most {SLOTS} lines of 'class score x1 y1 x2 y2', got {item[:40]!r}")
    for slot, fields in enumerate(lines):
        classes[slot], scores[slot], boxes[slot] = int(fields[0]), float(fields[1]), [float(v) for v in fields[2:]]
    return boxes, scores, classes


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "data").as_numpy()
            try:
                found = [detect(item) for item in data[:, 0]]
            except (ValueError, UnicodeDecodeError) as error:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(error))))
                continue
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor(name, np.stack([one[i] for one in found]))
                for i, name in enumerate(("boxes", "scores", "classes"))]))
        return responses
