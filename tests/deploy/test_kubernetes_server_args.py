"""The Deployment's command line, checked with the bundled tritonserver binary (Triton 2.51): every
tritonserver flag after the supervisor's ``--`` is one its ``--help`` lists, and the supervisor's
own options are the Docker mode's (trtis.serving.docker), so that the pod, the image and
``start.sh --mode docker`` agree on where the server's state and health are. Run on the tiny
repository (pod_runner: the supervisor running tritonserver, as the container does), it serves
clients, keeps the admin APIs behind the key, and exports every metric the autoscaler rule and the
dashboard name. test_kubernetes_pod.py runs the probes and the front door."""
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
from pod_runner import Pod, run_pod
from rendered_manifests import (OVERLAYS, ROOT, SCRAPE_LABELS, SUPERVISOR_PROBE, expanded_args, flags, named_queries, render,
                                selectors, supervised, triton_container)
from tiny_models import texts
from trt_client.client import Inference
from trtis.serving import Ports, ServerConfig, docker, embedded

ADMIN_KEY = secrets.token_hex(16)
SECRETS = {("triton-admin", "key"): ADMIN_KEY}
RESTRICTED_ERROR = "restricted"


def accepted_flags() -> set[str]:
    run = subprocess.run([str(embedded.binary()), "--help"], capture_output=True, text=True,
                         env=embedded.environment(), timeout=60)
    names = set(re.findall(r"^\s+(--[a-z][a-z0-9-]*)", run.stdout + run.stderr, flags=re.M))
    assert {"--model-repository", "--http-restricted-api"} <= names, f"unexpected --help output:\n{run.stdout}{run.stderr}"
    return names


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_flag_is_one_the_bundled_tritonserver_accepts(overlay):
    _, server = supervised(expanded_args(triton_container(render(overlay)), SECRETS))
    given = flags(server)
    assert {"--model-control-mode", "--backend-config", "--http-address", "--metrics-address"} <= set(given)
    assert not set(given) - accepted_flags()


def docker_mode_options() -> dict[str, str]:
    """The supervisor's options in the Docker mode's ``docker run`` (start.sh --mode docker)."""
    run = docker.command(ROOT / "model_repository", ServerConfig(ports=Ports(7000, 7001, 7002)), shm_prefix="trtis_0123abcd_")
    start = run.index("python3")
    options, server = supervised(run[start:])
    assert server[0] == "tritonserver"
    return options


def test_the_supervisor_keeps_its_state_and_health_where_the_docker_mode_does():
    supervisor, _ = supervised(triton_container(render("cpu"))["args"])
    assert supervisor["--state-file"] == docker.STATE_FILE
    assert supervisor["--ready-url"] == docker.READY_URL
    assert supervisor["--metrics-url"] == docker.METRICS_URL
    shared = {"--state-file", "--ready-url", "--metrics-url"}
    assert {k: v for k, v in docker_mode_options().items() if k in shared} == {k: supervisor[k] for k in shared}
    # The probe the pod runs is the one docker.probe runs with docker exec.
    probe = triton_container(render("cpu"))["readinessProbe"]["exec"]["command"]
    assert probe == [*SUPERVISOR_PROBE, "--ready-url", docker.READY_URL, "--state-file", docker.STATE_FILE]


@pytest.fixture(scope="module")
def deployed(tiny, tmp_path_factory) -> Iterator[Pod]:
    """The CPU overlay's container command and environment on the tiny repository."""
    with run_pod(tiny.root, tmp_path_factory.mktemp("deployed"), tmp_path_factory.mktemp("image"), SECRETS) as pod:
        yield pod


def test_clients_infer_through_the_deployment_command_line(deployed, tiny):
    with Inference(f"127.0.0.1:{deployed.ports.grpc}", tiny.ensemble) as runner:
        results = runner.run(input={"text": texts(1, 2.5, 40)})
    np.testing.assert_allclose(results["scores"], tiny.scores(texts(1, 2.5, 40)), rtol=1e-5, atol=1e-6)


def test_admin_apis_need_the_key_and_the_client_apis_do_not(deployed, tiny):
    http_client = httpclient.InferenceServerClient(f"127.0.0.1:{deployed.ports.http}")
    grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{deployed.ports.grpc}")
    try:
        # gRPC takes the header under Triton's prefix for restricted protocols (docs/deployment.md).
        for client, header, refused in ((http_client, "admin-key", "403"),
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
        index = http_client.get_model_repository_index(headers={"admin-key": ADMIN_KEY})
        assert {m["name"] for m in index} >= {tiny.ensemble, "tiny-text"}
    finally:
        http_client.close()
        grpc.close()


def scrape(port: int) -> dict[str, list]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def value(samples: list, **labels: str) -> float:
    (found,) = [s.value for s in samples if labels.items() <= s.labels.items()]
    return found


def test_metrics_the_autoscaler_and_dashboard_name_are_exported(deployed, tiny):
    """Every series the adapter rule and the dashboard select is in the server's /metrics, with the
    labels they match on (Prometheus adds namespace and pod when it scrapes), and the rule's
    denominator counts pipeline requests: one per request to the ensemble, whatever its steps."""
    before = scrape(deployed.ports.metrics)
    sent = 5
    with Inference(f"127.0.0.1:{deployed.ports.grpc}", tiny.ensemble) as runner:
        for i in range(sent):
            runner.run(input={"text": texts(i, i + 1)})
    after = scrape(deployed.ports.metrics)
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


def test_the_image_tree_serves_a_compiled_model_with_the_deployment_command_line(tmp_path):
    """The compiled network's backend (torch_compile) is the project's in the image too: a model
    exported in that format (on the CPU here) loads and answers from the image's backend tree."""
    import torch

    from trtis import export, repository

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten()).eval()
    exported = export.export(net, [torch.rand(2, 3, 16, 16)], ["image"], ["features"], "compiled", name="compiled",
                             max_batch_size=4)
    repository.write_repository(tmp_path / "repo", [exported.model])
    image = np.random.default_rng(0).random((3, 3, 16, 16), dtype=np.float32)
    (tmp_path / "state").mkdir()
    with run_pod(tmp_path / "repo", tmp_path / "state", tmp_path / "image", SECRETS) as pod:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{pod.ports.grpc}")
        tensor = grpcclient.InferInput("image", list(image.shape), "FP32")
        tensor.set_data_from_numpy(image)
        served = client.infer("compiled", [tensor]).as_numpy("features")
    with torch.inference_mode():
        np.testing.assert_allclose(served, net(torch.from_numpy(image)).numpy(), atol=1e-4)
