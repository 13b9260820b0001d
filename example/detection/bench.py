"""``bench.sh``: how fast the served detection pipeline is, where the time goes, and against what.

The detection front end of ``trtis.bench``: it sends ``raw_image`` requests (generated test
images, or yours) to the ``detection`` ensemble at each concurrency level, reads Triton's
statistics of the three models, and measures the baselines on the same images with the
repository's own runtimes: the pipeline in process, the network alone (batch sweep) and a naive
Flask server. Writes JSON, a Markdown table and a PNG plot to ``reports/`` (or ``--output``).
The figures hold for the machine measured, which the report names; its last line is the command
that measures another.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from detection import pipeline, workload
from trtis.bench import Titles, cli

ROOT = Path(__file__).resolve().parents[2]
COLUMNS = [("network batch", pipeline.NETWORK, "average_batch"), ("network queue ms", pipeline.NETWORK, "queue_ms"),
           ("network infer ms", pipeline.NETWORK, "compute_infer_ms"),
           ("preprocess queue ms", pipeline.PREPROCESS, "queue_ms")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.sh", description=__doc__.splitlines()[0],
                                     epilog="Figures hold only for the machine measured (--device names it in the "
                                            "report): run this on yours, with the server it will use.")
    cli.bench_arguments(parser, output=ROOT / "reports", name="cpu", repository_path=ROOT / "model_repository",
                        state_dir=ROOT / ".triton")
    workload.image_arguments(parser)
    args = parser.parse_args(argv)
    try:
        requests, source = workload.requests(args.image_dir, args.images)
    except (ValueError, OSError) as error:
        parser.error(str(error))
    overrides = workload.overrides(args.model_repository) if args.model_repository.is_dir() else {}
    levels = " ".join(str(level) for level in args.concurrency)
    reproduce = (f"./start.sh --restart && example/detection/bench.sh --concurrency {levels} --seconds {args.seconds:g}"
                 " --name my-machine  # writes reports/my-machine.{json,md,png}")
    titles = Titles(source=source, subject="Detection ensemble", columns=COLUMNS, reproduce=reproduce)
    return cli.run_bench(args, pipeline.ENSEMBLE, requests, titles, overrides=overrides, alone=pipeline.NETWORK)


if __name__ == "__main__":
    sys.exit(main())
