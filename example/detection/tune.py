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
STAGES = [("preprocess", pipeline.PREPROCESS), ("network", pipeline.NETWORK), ("postprocess", pipeline.POSTPROCESS)]


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
                       max_queue_delays_us=[0, 2000])
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
    stages = [(stage, model) for stage, model in STAGES if model in served]
    instances = {model: getattr(args, f"{stage}_instances") for stage, model in stages}
    threads = {model: getattr(args, f"{stage}_threads", []) for stage, model in stages}  # no postprocess threads
    threads = {model: counts for model, counts in threads.items() if counts}
    # The report's command for another machine: this sweep as given.
    swept = [(f"{stage}-instances", instances[model]) for stage, model in stages]
    swept += [(f"{stage}-threads", threads[model]) for stage, model in stages if model in threads]
    swept += [("max-batch-size", args.max_batch_size), ("max-queue-delay-us", args.max_queue_delay_us),
              ("concurrency", args.concurrency), ("clients", [args.clients] if args.clients > 1 else [])]
    reproduce = " ".join(["example/detection/tune.sh", *(f"--{flag} {' '.join(map(str, values))}"
                                                         for flag, values in swept if values),
                          "--name my-machine  # add --apply to keep the best"])
    return cli.run_tune(args, pipeline.ENSEMBLE, instances, requests, source,
                        overrides=workload.overrides(args.model_repository), threads=threads, reproduce=reproduce)


if __name__ == "__main__":
    sys.exit(main())
