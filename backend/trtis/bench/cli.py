"""Command lines of the benchmark and the tuning sweep: ``python -m trtis.bench`` for any model,
and the options and runs the example's ``bench.sh``/``tune.sh`` share with it.

    python -m trtis.bench --model my-model --concurrency 1 2 4 --model-repository model_repository
    python -m trtis.bench tune --model my-model --instances my-model=1,2 --max-queue-delay-us 0 1000
    python -m trtis.bench tune --model my-model --instances my-model=1,2 --threads my-model=1,2
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from trtis import quiet, repository
from trtis.bench import report, tune
from trtis.bench.measurement import benchmark, this_machine
from trtis.bench.baselines import in_process_levels
from trtis.bench.in_process import InProcessModel, StepFunction
from trtis.bench.inputs import Request, files_under, inputs_of, model_inputs, requests_for
from trtis.bench.plan import Baselines, Load, Target, Titles
from trtis.serving import LaunchError
from trtis.serving.state_folder import ADMIN_KEY_FILE
from trtis.serving.security import Security, SecurityError, read_key
from trt_client.errors import TrtClientError


DEFAULT_STATE_DIR = Path(os.environ.get("TRTIS_STATE_DIR", ".triton"))


def metrics_url_of(url: str) -> str:
    """The metrics endpoint beside a gRPC address, on start.sh's metrics port (7002)."""
    host = urllib.parse.urlsplit(f"//{url}").hostname or "127.0.0.1"
    return f"http://{host}:7002/metrics"


def _integers_by_name(values: Sequence[str], option: str, form: str) -> dict[str, list[int]]:
    """``NAME=N1,N2`` values (``--shape``, ``--instances``, ``--threads``) as {name: [N1, N2]}."""
    found = {}
    for value in values:
        name, _, numbers = value.partition("=")
        try:
            found[name] = [int(n) for n in numbers.split(",")]
        except ValueError:
            raise ValueError(f"{option} {value!r}: write {form} (integers)") from None
    return found


def _shapes(values: Sequence[str]) -> dict[str, list[int]]:
    return _integers_by_name(values, "--shape", "NAME=D1,D2")


def measurement_arguments(parser: argparse.ArgumentParser, *, concurrency: Sequence[int], seconds: float,
                          repository_path: Path, output: Path, name: str) -> None:
    """What a benchmark and a sweep both take: levels, time, clients, the repository, where reports go."""
    parser.add_argument("--model-repository", type=Path, default=repository_path,
                        help="the repository the server runs (for the baselines and the sweep)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=list(concurrency),
                        help="requests kept in flight by each client, one measurement per value")
    parser.add_argument("--clients", type=int, default=1, help="client processes, each with the concurrency given")
    parser.add_argument("--seconds", type=float, default=seconds, help="measured time per level")
    parser.add_argument("--warmup", type=float, default=5, help="seconds of load before each measured window")
    parser.add_argument("--output", type=Path, default=output,
                        help=f"report folder (default: {output}; the shipped docs/performance changes only "
                             "when pointed there)")
    parser.add_argument("--name", default=name, help="report file names: NAME.json, NAME.md (and NAME.png)")
    parser.add_argument("--device", default=this_machine(), help="how the report names this machine")
    parser.add_argument("--verbose", action="store_true", help="log every step, third-party libraries' notices too")


def bench_arguments(parser: argparse.ArgumentParser, *, output: Path, name: str,
                    repository_path: Path = Path("model_repository"), state_dir: Path = DEFAULT_STATE_DIR) -> None:
    """The benchmark's options (bench.sh's and ``python -m trtis.bench``'s); ``state_dir`` is where
    start.sh keeps the admin key of the server it started."""
    parser.add_argument("--url", default="127.0.0.1:7001", help="the server's gRPC address")
    parser.add_argument("--metrics-url", help="Triton's metrics endpoint, for GPU utilisation and memory "
                        "(default: port 7002 of the --url host)")
    admin = state_dir / ADMIN_KEY_FILE
    parser.add_argument("--admin-key-file", type=Path, default=admin if admin.exists() else None,
                        help=f"the key of the server's admin APIs, for its statistics (default: {admin}, where "
                             "start.sh keeps it, when that file exists)")
    parser.add_argument("--inference-key-file", type=Path, help="the key of a server that restricts inference")
    measurement_arguments(parser, concurrency=[1, 2, 4, 8, 16, 32, 64], seconds=20, repository_path=repository_path,
                          output=output, name=name)
    parser.add_argument("--baselines", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure the model in process (at its best batch size, and at each level with "
                             "as many requests in flight) and a naive Flask server")
    parser.add_argument("--batches", type=int, nargs="+", help="in-process batch sizes "
                        "(default: 1 8 where the model measured alone runs on the CPU, 1 8 16 32 64 on a GPU)")
    parser.add_argument("--baselines-from", type=Path, metavar="REPORT.json",
                        help="take the baselines from an earlier report of this machine instead of measuring them")
    parser.add_argument("--naive-port", type=int, default=7010, help="the naive server's port (0: any free one)")
    parser.add_argument("--naive-concurrency", type=int, default=16, help="highest concurrency the naive server gets")


def key_headers(args: argparse.Namespace) -> dict[str, str]:
    """The headers that carry the keys given (``--admin-key-file``, ``--inference-key-file``)."""
    keys = Security(admin_key=args.admin_key_file and read_key(args.admin_key_file),
                    inference_key=args.inference_key_file and read_key(args.inference_key_file))
    return keys.admin_headers | keys.inference_headers


def run_bench(args: argparse.Namespace, model: str, requests: Sequence[Request], titles: Titles, *,
              overrides: Mapping[str, StepFunction] | None = None, alone: str | None = None) -> int:
    """Measure, write the three report files, print the table (``titles.device`` from ``--device``)."""
    quiet.setup(args.verbose)
    try:
        headers = key_headers(args)
    except SecurityError as error:
        print(error, file=sys.stderr)
        return 2
    earlier = json.loads(args.baselines_from.read_text()) if args.baselines_from else None
    measure_baselines = args.baselines and earlier is None
    if measure_baselines and not (args.model_repository / model / "config.pbtxt").exists():
        print(f"{args.model_repository} has no model {model!r} for the baselines: pass --model-repository, "
              "or --no-baselines", file=sys.stderr)
        return 2
    try:
        found = benchmark(
            Target(args.url, model, metrics_url=args.metrics_url or metrics_url_of(args.url), headers=headers),
            Load(requests, args.concurrency, seconds=args.seconds, warmup=args.warmup, clients=args.clients),
            Baselines(args.model_repository if measure_baselines else None, overrides=overrides, alone=alone,
                      batches=args.batches, naive_port=args.naive_port, naive_concurrency=args.naive_concurrency,
                      earlier=earlier),
            replace(titles, device=args.device))
    except (ValueError, RuntimeError, OSError, TrtClientError) as error:  # PermissionError: an OSError
        print(f"{model}: {error}", file=sys.stderr)
        return 1
    paths = report.write(found, args.output, args.name)
    print(report.markdown(found))
    print(f"Report: {', '.join(str(p) for p in paths)}")
    return 0


def tune_arguments(parser: argparse.ArgumentParser, *, output: Path, name: str,
                   repository_path: Path = Path("model_repository"), max_batch_sizes: Sequence[int] = (),
                   max_queue_delays_us: Sequence[int] = ()) -> None:
    """The sweep's options (tune.sh's and ``python -m trtis.bench tune``'s), besides the instance counts.
    Without values to try, the max batch size and the queue delay stay as configured."""
    parser.add_argument("--max-batch-size", type=int, nargs="+", default=list(max_batch_sizes),
                        help="max batch sizes to try" + (f" (default: {' '.join(map(str, max_batch_sizes))})"
                                                         if max_batch_sizes else " (default: as configured)"))
    parser.add_argument("--max-queue-delay-us", type=int, nargs="+", default=list(max_queue_delays_us),
                        help="dynamic-batching queue delays to try" + (
                            f" (default: {' '.join(map(str, max_queue_delays_us))})" if max_queue_delays_us
                            else " (default: as configured)"))
    measurement_arguments(parser, concurrency=[1, 2, 4, 8], seconds=15, repository_path=repository_path,
                          output=output, name=name)
    parser.add_argument("--in-process", action=argparse.BooleanOptionalAction, default=True,
                        help="measure the model in process first, with as many requests in flight as each level "
                             "(one thread each), and judge every level against it (otherwise against the best "
                             "any setting served at that level)")
    parser.add_argument("--apply", action="store_true", help="write the best setting into the repository")


def run_tune(args: argparse.Namespace, model: str, instances: Mapping[str, Sequence[int]],
             requests: Sequence[Request], source: str, *, overrides: Mapping[str, StepFunction] | None = None,
             threads: Mapping[str, Sequence[int]] | None = None, reproduce: str | None = None) -> int:
    """Sweep, write the report, print it, and apply the winner when asked."""
    quiet.setup(args.verbose)
    root = args.model_repository.resolve()
    configs = repository.read_configs(root)
    try:
        settings = tune.grid(instances, args.max_batch_size or [None], args.max_queue_delay_us or [None], threads)
        in_process = None
        if args.in_process:
            with InProcessModel(root, model, overrides) as runner:
                rows = in_process_levels(runner, requests, [level * args.clients for level in args.concurrency],
                                         args.seconds, args.warmup)
            in_process = {level: row["throughput"] for level, row in zip(args.concurrency, rows)}
        results = tune.sweep(root, model, settings, Load(requests, args.concurrency, seconds=args.seconds,
                                                          warmup=args.warmup, clients=args.clients))
    except (ValueError, KeyError, RuntimeError, LaunchError) as error:
        print(f"tune: {error}", file=sys.stderr)
        return 1
    clients = f"{args.clients} client processes, each with the concurrency shown; " if args.clients > 1 else ""
    title = (f"Tuning sweep of {model}, {args.device}, {time.strftime('%Y-%m-%d')}; {clients}{args.seconds:g} s per level "
             f"after {args.warmup:g} s warm-up, {source} round-robin"
             + ("; in process, requests/s at each level: "
                + ", ".join(f"{level}: {rate}" for level, rate in in_process.items()) + "."
                if in_process is not None else "."))
    found = tune.report(results, title, args.device, time.strftime("%Y-%m-%d"), in_process, reproduce)
    paths = tune.write(found, args.output, args.name)
    print(tune.markdown(found))
    print(f"Report: {', '.join(str(p) for p in paths)}")
    if args.apply:
        tune.apply(root, tune.configured(configs, model, tune.Setting(**found["best"]["setting"])))
        print(f"Applied to {root}: {found['best']['label']} (restart the server: ./start.sh --restart)")
    return 0


def _input_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="the model to measure: an ensemble or a single model")
    parser.add_argument("--input-files", type=Path, nargs="+", default=[],
                        help="files (or folders of them) for the model's BYTES input, one request each")
    parser.add_argument("--shape", nargs="+", default=[], metavar="NAME=D1,D2",
                        help="the shape of inputs with variable dims (without the batch axis)")
    parser.add_argument("--count", type=int, default=16, help="random requests to make when no files are given")


def bench_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m trtis.bench",
                                     description="Benchmark a served model; 'tune' as first argument sweeps its settings.")
    _input_arguments(parser)
    bench_arguments(parser, output=Path("reports"), name="bench")
    parser.add_argument("--alone", help="a composing model to measure alone in process, per batch size")
    args = parser.parse_args(argv)
    try:
        requests, source = requests_for(model_inputs(args.url, args.model, key_headers(args)),
                                        files_under(args.input_files), args.count, _shapes(args.shape))
    except (ValueError, OSError) as error:  # SecurityError: a ValueError
        parser.error(str(error))
    command = f"python -m trtis.bench --model {args.model} --concurrency {' '.join(map(str, args.concurrency))}"
    return run_bench(args, args.model, requests, Titles(source=source, reproduce=command), alone=args.alone)


def tune_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m trtis.bench tune", description=tune.__doc__.splitlines()[0])
    _input_arguments(parser)
    parser.add_argument("--instances", nargs="+", default=[], metavar="MODEL=N1,N2",
                        help="instance counts to try for a composing model")
    parser.add_argument("--threads", nargs="+", default=[], metavar="MODEL=N1,N2",
                        help="intra-op threads per instance to try for a composing model (0: the runtime's "
                             "default, every core; default: as configured, else the cores shared by its instances)")
    tune_arguments(parser, output=Path("reports"), name="tune")
    args = parser.parse_args(argv)
    try:
        instances, threads = (_integers_by_name(args.instances, "--instances", "MODEL=N1,N2"),
                              _integers_by_name(args.threads, "--threads", "MODEL=N1,N2"))
        configs = repository.read_configs(args.model_repository)
        if args.model not in configs:
            raise ValueError(f"{args.model_repository} has no model {args.model!r}")
        requests, source = requests_for(inputs_of(configs[args.model]), files_under(args.input_files), args.count,
                                        _shapes(args.shape))
    except (ValueError, OSError) as error:
        parser.error(str(error))
    return run_tune(args, args.model, instances, requests, source, threads=threads)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return tune_main(argv[1:]) if argv[:1] == ["tune"] else bench_main(argv)
