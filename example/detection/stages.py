"""A written model repository's three stages run in this process, with the runtimes the server
uses for them: the limit the served pipeline is measured against, and what the naive server runs.

The preprocess is the frozen TensorFlow graph or the OpenCV math of the Python model (on a pool
of threads: OpenCV releases the GIL); the network is the ONNX model (ONNX Runtime, CPU) or the
TorchScript module (on the GPU where its instance group says KIND_GPU); the postprocess is the
ONNX model.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detection import letterbox, pipeline
from trtis import repository
from trtis.config import DEFAULT_MODEL_FILENAME, ModelConfig

Arrays = tuple[np.ndarray, ...]


@dataclass
class Stages:
    preprocess: Callable[[Sequence[bytes]], Arrays]
    network: Callable[[np.ndarray], Arrays]
    postprocess: Callable[[Arrays, np.ndarray, np.ndarray], Arrays]
    network_device: str

    def __call__(self, images: Sequence[bytes]) -> Arrays:
        """Encoded images -> boxes, scores, classes."""
        image, meta_affine, meta_size = self.preprocess(images)
        return self.postprocess(self.network(image), meta_affine, meta_size)


def _model_file(root: Path, config: ModelConfig) -> Path:
    name = config.default_model_filename or DEFAULT_MODEL_FILENAME[config.platform or config.backend]
    return root / config.name / "1" / name


def _opencv_preprocess(size: int) -> Callable[[Sequence[bytes]], Arrays]:
    pool = ThreadPoolExecutor(os.cpu_count() or 1)

    return lambda images: letterbox.preprocess_batch(images, size, pool.map)


def _onnx(path: Path, output_names: list[str] | None = None) -> Callable[[dict], list[np.ndarray]]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda feed: session.run(output_names, feed)


def _torchscript(path: Path, device: str) -> Callable[[np.ndarray], Arrays]:
    import torch

    module = torch.jit.load(str(path), map_location=device).eval()

    def run(image: np.ndarray) -> Arrays:
        with torch.inference_mode():
            outputs = module(torch.from_numpy(image).to(device, non_blocking=True))
            return tuple(t.cpu().numpy() for t in outputs)
    return run


def load(root: Path) -> Stages:
    """The stages of the repository at ``root``, as ``convert.sh`` wrote them."""
    root = Path(root)
    configs = repository.read_configs(root)
    missing = {pipeline.PREPROCESS, pipeline.NETWORK, pipeline.POSTPROCESS} - configs.keys()
    if missing:
        raise FileNotFoundError(f"{root} lacks {', '.join(sorted(missing))}: run convert.sh first")
    pre, net, post = configs[pipeline.PREPROCESS], configs[pipeline.NETWORK], configs[pipeline.POSTPROCESS]
    size = int(next(o for o in pre.output if o.name == pipeline.IMAGE).dims[-1])
    if pre.platform == "tensorflow_graphdef":
        from detection.preprocess import TensorFlowPreprocess

        preprocess = TensorFlowPreprocess(size)
    else:
        preprocess = _opencv_preprocess(size)

    device = "cpu"
    if net.platform == "onnxruntime_onnx":
        session = _onnx(_model_file(root, net), list(pipeline.HEADS))

        def network(image: np.ndarray) -> Arrays:
            return tuple(session({pipeline.IMAGE: image}))
    elif net.platform == "pytorch_libtorch":
        import torch

        gpu = any(group.kind == group.KIND_GPU for group in net.instance_group)
        if gpu and torch.cuda.is_available():
            device = "cuda:0"
        network = _torchscript(_model_file(root, net), device)
    else:
        raise ValueError(f"no in-process runtime here for the network's platform {net.platform!r}")

    decode = _onnx(_model_file(root, post))

    def postprocess(heads: Arrays, meta_affine: np.ndarray, meta_size: np.ndarray) -> Arrays:
        feed = dict(zip(pipeline.HEADS, heads))
        feed.update({pipeline.META_AFFINE: meta_affine, pipeline.META_SIZE: meta_size})
        return tuple(decode(feed))
    return Stages(preprocess, network, postprocess, device)
