"""``tune.sh``: sweep the served models' instance counts and dynamic batching; report and keep the best.

The detection front end of ``trtis.bench.tune``: each setting is served from a scratch
repository (model files linked, not copied) on free ports and measured at every concurrency
level; the winner is the setting whose worst level comes closest to the pipeline run in process
(see ``trtis.bench.tune`` for the rule). ``--apply`` writes it into the repository.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from detection import pipeline, workload
from trtis import repository
from trtis.bench import cli
from trtis.bench.ensembles import composing_models

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tune.sh", description=__doc__.splitlines()[0])
    parser.add_argument("--preprocess-instances", type=int, nargs="+", default=[1, 2],
                        help="(where the repository has a preprocess model of its own)")
    parser.add_argument("--network-instances", type=int, nargs="+", default=[1, 2],
                        help="per GPU where the network's instance group is on GPUs")
    parser.add_argument("--postprocess-instances", type=int, nargs="+", default=[1])
    parser.add_argument("--preprocess-threads", type=int, nargs="+", default=[],
                        help="TensorFlow intra-op threads per preprocess instance to try (default: as configured)")
    parser.add_argument("--network-threads", type=int, nargs="+", default=[],
                        help="intra-op threads per network instance to try (CPU; 0: every core; default: as "
                             "configured, else the cores shared by its instances)")
    cli.tune_arguments(parser, output=ROOT / "reports", name="tune-cpu", repository_path=ROOT / "model_repository",
                       max_batch_sizes=[8], max_queue_delays_us=[0, 2000])
    workload.image_arguments(parser)
    args = parser.parse_args(argv)
    if not (args.model_repository / pipeline.ENSEMBLE / "config.pbtxt").exists():
        parser.error(f"{args.model_repository} is not a detection repository: run convert.sh first")
    try:
        requests, source = workload.requests(args.image_dir, args.images)
    except (ValueError, OSError) as error:
        parser.error(str(error))
    # Only the models the ensemble runs: on a GPU the network decodes the boxes itself, and with
    # --preprocess-in-network it preprocesses too, so there is no preprocess or postprocess to vary.
    served = set(composing_models(repository.read_configs(args.model_repository), pipeline.ENSEMBLE))
    instances = {model: counts for model, counts in ((pipeline.PREPROCESS, args.preprocess_instances),
                                                     (pipeline.NETWORK, args.network_instances),
                                                     (pipeline.POSTPROCESS, args.postprocess_instances)) if model in served}
    threads = {model: counts for model, counts in ((pipeline.PREPROCESS, args.preprocess_threads),
                                                   (pipeline.NETWORK, args.network_threads)) if counts and model in served}
    levels = " ".join(str(level) for level in args.concurrency)
    reproduce = f"example/detection/tune.sh --concurrency {levels} --name my-machine  # add --apply to keep the best"
    return cli.run_tune(args, pipeline.ENSEMBLE, instances, requests, source,
                        overrides=workload.overrides(args.model_repository), threads=threads, reproduce=reproduce)


if __name__ == "__main__":
    sys.exit(main())
