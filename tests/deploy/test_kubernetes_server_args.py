"""The Deployment's Triton command line, checked with the bundled tritonserver binary (Triton 2.51):
every flag is one its ``--help`` lists; run on the tiny repository it serves clients, keeps the
admin APIs behind the key, and exports every metric the autoscaler rule and the dashboard name."""
from __future__ import annotations

import re
import secrets
import subprocess
import urllib.request
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from detection import pipeline
from rendered_manifests import (OVERLAYS, SCRAPE_LABELS, container_env, expanded_args, flags, named_queries, render,
                                selectors, triton_container)
from tiny_models import texts
from trt_client.client import Inference
from trtis.serving import Ports, embedded, launcher

ADMIN_KEY = secrets.token_hex(16)
SECRETS = {("triton-admin", "key"): ADMIN_KEY}
# What differs on this machine: where the repository and the backends are, and free local ports.
HOST_FLAGS = ("--model-repository", "--backend-directory", "--cache-directory", "--http-address", "--http-port",
              "--grpc-address", "--grpc-port", "--metrics-address", "--metrics-port")
RESTRICTED_ERROR = "restricted"


def accepted_flags() -> set[str]:
    run = subprocess.run([str(embedded.binary()), "--help"], capture_output=True, text=True,
                         env=embedded.environment(), timeout=60)
    names = set(re.findall(r"^\s+(--[a-z][a-z0-9-]*)", run.stdout + run.stderr, flags=re.M))
    assert {"--model-repository", "--http-restricted-api"} <= names, f"unexpected --help output:\n{run.stdout}{run.stderr}"
    return names


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_flag_is_one_the_bundled_tritonserver_accepts(overlay):
    given = flags(expanded_args(triton_container(render(overlay)), SECRETS))
    assert "--model-control-mode" in given and not set(given) - accepted_flags()


@pytest.fixture(scope="module")
def deployed(tiny, tmp_path_factory) -> Iterator[Ports]:
    """The CPU overlay's command line and environment, run by the bundled binary on the tiny
    repository; only the host-specific flags come from trtis.serving.embedded."""
    container = triton_container(render("cpu"))
    ports = Ports(launcher.free_port(), launcher.free_port(), launcher.free_port())
    local = embedded.command(embedded.DEFAULT_HOME, tiny.root, "127.0.0.1", ports.http, ports.grpc, ports.metrics)
    host = {name: value for name, value in flags(["tritonserver", *local[1:]]).items() if name in HOST_FLAGS}
    command = [local[0], *(f"{n}={v}" for n, v in {**flags(expanded_args(container, SECRETS)), **host}.items())]
    state = tmp_path_factory.mktemp("deployed")
    log = state / launcher.LOG_FILE
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env={**embedded.environment(), **container_env(container, SECRETS)},
                                   start_new_session=True)
    (state / launcher.PID_FILE).write_text(str(process.pid))
    try:
        launcher.wait_ready("127.0.0.1", ports.http, 300, still_running=lambda: process.poll() is None)
    except launcher.LaunchError as error:
        launcher.stop(state)
        pytest.fail(f"{error}; the server's log:\n{log.read_text(errors='replace')[-4000:]}")
    try:
        yield ports
    finally:
        launcher.stop(state)


def test_clients_infer_through_the_deployment_command_line(deployed, tiny):
    with Inference(f"127.0.0.1:{deployed.grpc}", tiny.ensemble) as runner:
        results = runner.run(input={"text": texts(1, 2.5, 40)})
    np.testing.assert_allclose(results["scores"], tiny.scores(texts(1, 2.5, 40)), rtol=1e-5, atol=1e-6)


def test_admin_apis_need_the_key_and_the_client_apis_do_not(deployed, tiny):
    http = httpclient.InferenceServerClient(f"127.0.0.1:{deployed.http}")
    grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{deployed.grpc}")
    try:
        # gRPC takes the header under Triton's prefix for restricted protocols (docs/deployment.md).
        for client, header, refused in ((http, "admin-key", "403"),
                                        (grpc, "triton-grpc-protocol-admin-key", "StatusCode.UNAVAILABLE")):
            key, wrong = {header: ADMIN_KEY}, {header: ADMIN_KEY[::-1]}
            assert client.is_server_ready() and client.is_model_ready(tiny.ensemble)
            assert client.get_model_metadata(tiny.ensemble) and client.get_model_config(tiny.ensemble)
            for call in (client.get_model_repository_index, client.get_inference_statistics, client.get_log_settings):
                for headers in (None, wrong):
                    with pytest.raises(InferenceServerException, match=RESTRICTED_ERROR) as error:
                        call(headers=headers)
                    assert error.value.status() == refused
                assert call(headers=key)
            with pytest.raises(InferenceServerException, match=RESTRICTED_ERROR):
                client.unload_model(tiny.ensemble)
        index = http.get_model_repository_index(headers={"admin-key": ADMIN_KEY})
        assert {m["name"] for m in index} >= {tiny.ensemble, "tiny-text"}
    finally:
        http.close()
        grpc.close()


def scrape(ports: Ports) -> dict[str, list]:
    with urllib.request.urlopen(f"http://127.0.0.1:{ports.metrics}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def value(samples: list, **labels: str) -> float:
    (found,) = [s.value for s in samples if labels.items() <= s.labels.items()]
    return found


def test_metrics_the_autoscaler_and_dashboard_name_are_exported(deployed, tiny):
    """Every series the adapter rule and the dashboard select is in the server's /metrics, with the
    labels they match on (Prometheus adds namespace and pod when it scrapes), and the rule's
    denominator counts pipeline requests: one per request to the ensemble, whatever its steps."""
    before = scrape(deployed)
    sent = 5
    with Inference(f"127.0.0.1:{deployed.grpc}", tiny.ensemble) as runner:
        for i in range(sent):
            runner.run(input={"text": texts(i, i + 1)})
    after = scrape(deployed)
    checked = 0
    for source, query in named_queries().items():
        for selector in selectors(query):
            assert selector.name in after, f"{source}: {selector.name} is not exported by Triton"
            for matcher in selector.matchers.matchers:
                if matcher.name in SCRAPE_LABELS:
                    continue
                assert all(matcher.name in s.labels for s in after[selector.name]), \
                    f"{source}: {selector.name} has no label {matcher.name}"
                if matcher.name == "model":
                    assert matcher.value == pipeline.ENSEMBLE, f"{source}: model {matcher.value!r} is not the ensemble"
            checked += 1
    assert checked >= 10
    success_before = value(before["nv_inference_request_success"], model=tiny.ensemble)
    success_after = value(after["nv_inference_request_success"], model=tiny.ensemble)
    assert success_after - success_before == sent
    steps = ("tiny-text", "tiny-affine", "tiny-head")
    queued = sum(value(after["nv_inference_queue_duration_us"], model=m) - value(before["nv_inference_queue_duration_us"], model=m)
                 for m in steps)
    assert queued > 0, "the steps' queues (20 ms batching delay each) are counted"
