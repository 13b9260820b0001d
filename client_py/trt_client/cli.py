"""``trt-client``: send files to a model and print what it found, as a table or as JSON.

    trt-client --url 127.0.0.1:7001 --model detection example/test-data/*.jpg
    trt-client --model detection --threshold 0.5 --top-k 5 images/*.jpg
    trt-client --model detection --json --async --concurrency 8 images/*.jpg
    trt-client --url 10.0.0.1:8001 --url 10.0.0.2:8001 --model detection images/*.jpg     # two replicas
    trt-client --url triton.example:8001 --ssl --root-certificates ca.pem \
               --header triton-grpc-protocol-inference-key=KEY --model detection image.jpg

Each file's bytes go into the model's one BYTES input (or ``--input NAME``). The table shows, per
file, the detections of a detector (outputs ``boxes``, ``scores``, ``classes``) with the model's
class names, or each output's datatype, shape and first values; ``--json`` prints one document,
``printout.json_document``'s. A file that is missing, unreadable or refused by the model gets its
error on its row and the others go on; the exit status is then 1, and 2 for arguments that cannot work.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE

from trt_client.client import Inference
from trt_client.detections import CLASSES, is_detection
from trt_client.errors import TrtClientError
from trt_client.printout import Answer, json_document, table


def _input_name(runner: Inference, requested: str | None) -> str:
    if requested:
        return requested
    names = [t.name for t in runner.inputs if t.datatype == "BYTES"]
    if len(names) != 1:
        raise TrtClientError(f"model {runner.model_name!r} has inputs {[str(t) for t in runner.inputs]}: "
                             "name the one that takes the file with --input")
    return names[0]


def read_file(path: Path) -> bytes:
    """The file's bytes; raises ``OSError`` with a message that says what is wrong with it."""
    if not path.is_file():
        raise OSError("no such file" if not path.exists() else "not a regular file")
    size = path.stat().st_size
    if size > MAX_GRPC_MESSAGE_SIZE:
        raise OSError(f"{size} bytes is more than one gRPC message can carry ({MAX_GRPC_MESSAGE_SIZE} bytes)")
    try:
        return path.read_bytes()
    except OSError as error:
        raise OSError(f"cannot read it: {error.strerror or error}") from None


def infer_files(runner: Inference, files: list[Path], input_name: str, asynchronous: bool) -> list[Answer]:
    """Outputs (or the error) for each file, in the order of ``files``; a file that cannot be read
    is not sent."""
    answers: dict[int, Answer] = {}
    sent = []
    for index, path in enumerate(files):
        try:
            request = {input_name: read_file(path)}
            if asynchronous:
                runner.async_run(input=request, input_id=index)
                sent.append(index)
            else:
                answers[index] = Answer(str(path), runner.run(input=request))
        except (OSError, TrtClientError) as error:
            answers[index] = Answer(str(path), error=str(error))
    for _ in sent:
        try:
            index, outputs = runner.get(block=True)
            answers[index] = Answer(str(files[index]), outputs)
        except TrtClientError as error:
            answers[error.input_id] = Answer(str(files[error.input_id]), error=str(error))
    return [answers[i] for i in range(len(files))]


def _class_names(runner: Inference, answers: list[Answer]) -> tuple[str, ...] | None:
    """The model's class names; says on stderr why there are none where a reader would expect them."""
    try:
        names = runner.class_names
    except TrtClientError as error:
        print(f"trt-client: {error}; classes are shown as indices", file=sys.stderr)
        return None
    label_file = runner.spec.label_files.get(CLASSES)
    if names is None and label_file and any(a.outputs is not None and is_detection(a.outputs) for a in answers):
        print(f"trt-client: model {runner.model_name!r} names its classes in the label file {label_file!r} of "
              f"output {CLASSES!r}, which Triton does not serve to clients; classes are shown as indices. Put the "
              "names in the config's class_names parameter (a JSON list) to see them.", file=sys.stderr)
    return names


def _header(text: str) -> tuple[str, str]:
    key, separator, value = text.partition("=")
    if not separator or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def _score(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give 1 or more")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trt-client", description="Send files to a Triton model; print what it "
                                     "found as a table, or as JSON with --json.")
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE")
    parser.add_argument("--url", action="append", help="the server's gRPC address (default 127.0.0.1:7001); repeat it "
                        "for several replicas, or give a gRPC target (dns:///triton-headless:8001, "
                        "ipv4:10.0.0.1:8001,10.0.0.2:8001)")
    parser.add_argument("--model", required=True)
    parser.add_argument("--model-version", default="")
    parser.add_argument("--input", help="the input that takes the file's bytes (default: the model's one BYTES input)")
    printed = parser.add_argument_group("what is printed")
    printed.add_argument("--json", action="store_true", help="one JSON document with every output, for machines")
    printed.add_argument("--threshold", type=_score, default=0.3,
                         help="the table's lowest detection score (default 0.3)")
    printed.add_argument("--top-k", type=_count, default=10, help="the table's most detections per file (default 10)")
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
            names = _class_names(runner, answers)
            datatypes = {t.name: t.datatype for t in runner.outputs}
    except TrtClientError as error:
        print(f"trt-client: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json_document(args.model, answers, names))
    else:
        print(table(answers, names, datatypes, args.threshold, args.top_k))
    failed = sum(a.error is not None for a in answers)
    if failed:
        print(f"trt-client: {failed} of {len(answers)} file(s) failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
