"""``trt-client``: send image files to a model and print the outputs as JSON.

    trt-client --url 127.0.0.1:7001 --model detection example/test-data/*.jpg
    trt-client --model detection --async --concurrency 8 images/*.jpg
    trt-client --url 10.0.0.1:8001 --url 10.0.0.2:8001 --model detection images/*.jpg     # two replicas
    trt-client --url triton.example:8001 --ssl --root-certificates ca.pem \
               --header triton-grpc-protocol-inference-key=KEY --model detection image.jpg

Each file's bytes go into the model's one BYTES input (or ``--input NAME``). The output is one
JSON document: ``{"model", "results": [{"file", "outputs": {name: values}} or {"file", "error"}]}``;
the exit status is 1 when any request failed, 2 for arguments that cannot work.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from trt_client.client import Inference
from trt_client.errors import TrtClientError


def _input_name(runner: Inference, requested: str | None) -> str:
    if requested:
        return requested
    names = [t.name for t in runner.inputs if t.datatype == "BYTES"]
    if len(names) != 1:
        raise TrtClientError(f"model {runner.model_name!r} has inputs {[str(t) for t in runner.inputs]}: "
                             "name the one that takes the file with --input")
    return names[0]


def infer_files(runner: Inference, files: list[Path], input_name: str, asynchronous: bool) -> list[dict]:
    """Outputs (or the error) for each file, in the order of ``files``."""
    def request(path: Path) -> dict:
        return {input_name: path.read_bytes()}

    def success(path: Path, outputs: dict) -> dict:
        return {"file": str(path), "outputs": {name: value.tolist() for name, value in outputs.items()}}

    answers: dict[int, dict] = {}
    if not asynchronous:
        for index, path in enumerate(files):
            try:
                answers[index] = success(path, runner.run(input=request(path)))
            except TrtClientError as error:
                answers[index] = {"file": str(path), "error": str(error)}
        return [answers[i] for i in range(len(files))]
    for index, path in enumerate(files):
        runner.async_run(input=request(path), input_id=index)
    for _ in files:
        try:
            index, outputs = runner.get(block=True)
            answers[index] = success(files[index], outputs)
        except TrtClientError as error:
            answers[error.input_id] = {"file": str(files[error.input_id]), "error": str(error)}
    return [answers[i] for i in range(len(files))]


def _decode(value):
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def _header(text: str) -> tuple[str, str]:
    key, separator, value = text.partition("=")
    if not separator or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trt-client", description="Send files to a Triton model; print JSON.")
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE")
    parser.add_argument("--url", action="append", help="the server's gRPC address (default 127.0.0.1:7001); repeat it "
                        "for several replicas, or give a gRPC target (dns:///triton-headless:8001, "
                        "ipv4:10.0.0.1:8001,10.0.0.2:8001)")
    parser.add_argument("--model", required=True)
    parser.add_argument("--model-version", default="")
    parser.add_argument("--input", help="the input that takes the file's bytes (default: the model's one BYTES input)")
    parser.add_argument("--async", dest="asynchronous", action="store_true", help="send all requests at once")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight with --async")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    parser.add_argument("--no-retry-unavailable", dest="retry_unavailable", action="store_false",
                        help="do not send a request again when its replica went away (UNAVAILABLE)")
    tls = parser.add_argument_group("TLS and keys")
    tls.add_argument("--ssl", action="store_true", help="connect over TLS")
    tls.add_argument("--root-certificates", metavar="FILE", help="PEM of the CA that signed the server's certificate")
    tls.add_argument("--private-key", metavar="FILE", help="mutual TLS: the client's PEM key")
    tls.add_argument("--certificate-chain", metavar="FILE", help="mutual TLS: the client's PEM certificate")
    tls.add_argument("--header", action="append", type=_header, default=[], metavar="KEY=VALUE",
                     help="a header sent with every call, e.g. a restricted API's key "
                          "(triton-grpc-protocol-<key>=<value>); repeatable")
    args = parser.parse_args(argv)
    missing = [str(f) for f in args.files if not f.is_file()]
    if missing:
        print(f"trt-client: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    urls = args.url or ["127.0.0.1:7001"]
    try:
        runner = Inference(urls[0] if len(urls) == 1 else urls, args.model, args.model_version, timeout=args.timeout,
                           max_in_flight=args.concurrency, ssl=args.ssl, root_certificates=args.root_certificates,
                           private_key=args.private_key, certificate_chain=args.certificate_chain,
                           headers=dict(args.header), retry_unavailable=args.retry_unavailable)
    except ValueError as error:  # settings that contradict each other, or a missing certificate file
        parser.error(str(error))
    except TrtClientError as error:
        print(f"trt-client: {error}", file=sys.stderr)
        return 1
    try:
        with runner:
            answers = infer_files(runner, args.files, _input_name(runner, args.input), args.asynchronous)
    except TrtClientError as error:
        print(f"trt-client: {error}", file=sys.stderr)
        return 1
    json.dump({"model": args.model, "results": answers}, sys.stdout, default=_decode)
    print()
    return 1 if any("error" in a for a in answers) else 0


if __name__ == "__main__":
    sys.exit(main())
