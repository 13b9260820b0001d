"""The whole pipeline in one process (OpenCV preprocess, PyTorch network, PyTorch decoder):
the reference the served ensemble is checked against, and the no-server baseline."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from detection import letterbox, pipeline
from detection.postprocess import CenterNetDecoder


Preprocess = Callable[[Sequence[bytes]], tuple[np.ndarray, np.ndarray, np.ndarray]]


class ReferencePipeline:
    """``preprocess`` defaults to the OpenCV reference; pass ``TensorFlowPreprocess`` to run
    exactly the served graph."""

    def __init__(self, network: torch.nn.Module, input_size: int = pipeline.INPUT_SIZE,
                 preprocess: Preprocess | None = None):
        self.network = network.eval()
        self.decoder = CenterNetDecoder()
        self.input_size = input_size
        self._preprocess = preprocess

    def preprocess(self, images: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._preprocess is not None:
            return self._preprocess(images)
        return letterbox.preprocess_batch(images, self.input_size)

    @torch.inference_mode()
    def network_outputs(self, image: np.ndarray) -> tuple[torch.Tensor, ...]:
        return self.network(torch.from_numpy(image))

    @torch.inference_mode()
    def __call__(self, images: Sequence[bytes]) -> dict[str, np.ndarray]:
        """Encoded images -> ``boxes`` [N, K, 4], ``scores`` [N, K], ``classes`` [N, K]."""
        image, meta_affine, meta_size = self.preprocess(images)
        heads = self.network_outputs(image)
        boxes, scores, classes = self.decoder(*heads, torch.from_numpy(meta_affine), torch.from_numpy(meta_size))
        return {pipeline.BOXES: boxes.numpy(), pipeline.SCORES: scores.numpy(), pipeline.CLASSES: classes.numpy()}
