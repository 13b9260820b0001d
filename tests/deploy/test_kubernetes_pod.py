"""The pod's probes and its front door, run here (pod_runner): the CPU overlay's Triton container
command, on a repository of one Python model (the quickest to restart), with its probe command;
then the front-door container's nginx with the pod's configuration in front of that server.

The probe fails within 10 s of a backend process killed (kill -9) or stopped (SIGSTOP), while
Triton's own health endpoints would stay 200, and passes again once the supervisor has restarted
the server, which then answers; the front door passes an HTTP inference and its metrics, and
refuses a request that crashes Triton 2.51 before Triton sees it. One server serves every test."""
from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient

from pod_runner import Pod, run_pod
from servers import wait_until
from rendered_manifests import FRONT_DOOR_CONF, front_door_container, render
from trtis import config, repository
from trtis.serving import front_door, health, ports, process

SECRETS = {("triton-admin", "key"): "0123456789abcdef" * 4}
PROBE_BOUND_S = 10   # issue 23: a broken replica leaves the Services within 10 s
HEAL_BOUND_S = 120   # the supervisor's restart on a loaded 2-core machine, with room
ECHO = b'''import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("echo", pb_utils.get_input_tensor_by_name(r, "data")
                                                            .as_numpy())]) for r in requests]
'''
DATA = np.arange(8, dtype=np.float32).reshape(2, 4)


@pytest.fixture(scope="module")
def pod(tmp_path_factory) -> Iterator[Pod]:
    echo = config.model_config("echo", backend="python", max_batch_size=8, inputs=[config.Tensor("data", np.float32, [4])],
                               outputs=[config.Tensor("echo", np.float32, [4])])
    root = tmp_path_factory.mktemp("echo_repository")
    repository.write_repository(root, [repository.Model(echo, ECHO)])
    with run_pod(root, tmp_path_factory.mktemp("pod"), tmp_path_factory.mktemp("image"), SECRETS) as pod:
        yield pod


def echoed(port: int) -> np.ndarray:
    client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
    data = httpclient.InferInput("data", list(DATA.shape), "FP32")
    data.set_data_from_numpy(DATA)
    try:
        return client.infer("echo", [data]).as_numpy("echo")
    finally:
        client.close()


def stub(pod: Pod) -> tuple[int, process.ProcessId, str]:
    """A live backend process of the pod's server: pid, identity, instance name."""
    (pid, name), *_ = sorted(process.stubs(pod.shm_prefix).items(), key=lambda item: item[1])
    return pid, process.identify(pid), name


def fault(pod: Pod, harm, pid: int) -> tuple[float, float, str]:
    """``harm(pid)``; the seconds until the probe command failed, until it passed again, and what it
    said when it failed. While the supervisor restarts the server, its state file is read in this
    process (the probe's own check) to spare the 2 cores; the command confirms each change."""
    ok, said = pod.probe()
    assert ok, said
    restarts = pod.state()["restarts"]
    harmed_at = time.monotonic()
    harm(pid)
    failures = []

    def failing() -> bool:
        ok, said = pod.probe()
        failures.append(said)
        return not ok

    assert wait_until(failing, PROBE_BOUND_S, step=0.1) is not None, \
        f"the probe still passed {PROBE_BOUND_S} s after the fault; the log:\n{pod.log_tail()}"
    failed = time.monotonic() - harmed_at  # when the first failing probe answered
    ready_url = pod.probe_command[pod.probe_command.index("--ready-url") + 1]
    state_file = Path(pod.probe_command[pod.probe_command.index("--state-file") + 1])
    assert wait_until(lambda: health.probe(ready_url, state_file) is None and pod.probe()[0], HEAL_BOUND_S,
                      step=0.25, still=lambda: pod.supervisor.poll() is None) is not None, \
        f"the probe did not pass again within {HEAL_BOUND_S} s: {pod.probe()[1]}\n{pod.log_tail()}"
    healed = time.monotonic() - harmed_at
    assert pod.state()["restarts"] == restarts + 1, "the supervisor restarted the server, once"
    assert pid not in process.stubs(pod.shm_prefix), "the harmed process is gone"
    np.testing.assert_array_equal(echoed(pod.ports.http), DATA)
    return failed, healed, failures[-1]


def test_the_probe_passes_while_triton_serves(pod):
    ok, said = pod.probe()
    assert ok and said == "healthy"
    np.testing.assert_array_equal(echoed(pod.ports.http), DATA)


def test_a_killed_backend_process_fails_the_probe_then_the_supervisor_heals_it(pod):
    pid, _, name = stub(pod)
    failed, healed, said = fault(pod, lambda pid: os.kill(pid, signal.SIGKILL), pid)
    print(f"\npod: kill -9 of {name}: the probe failed after {failed:.1f} s ({said!r}), passed again after {healed:.1f} s")
    assert "died" in said or "restarting" in said, said


def test_a_stopped_backend_process_fails_the_probe_then_the_supervisor_heals_it(pod):
    pid, identity, name = stub(pod)
    try:
        failed, healed, said = fault(pod, lambda pid: os.kill(pid, signal.SIGSTOP), pid)
    finally:
        if identity is not None and identity.alive():  # never a process that got the pid since
            os.kill(pid, signal.SIGCONT)
    print(f"\npod: SIGSTOP of {name}: the probe failed after {failed:.1f} s ({said!r}), passed again after {healed:.1f} s")
    assert "stopped" in said or "restarting" in said, said


# The front-door container -----------------------------------------------------------------------
@dataclass
class Door:
    http: int
    metrics: int
    nginx: subprocess.Popen


@pytest.fixture(scope="module")
def door(pod, tmp_path_factory) -> Iterator[Door]:
    """The front-door container's command, with the configuration that `python -m trtis.serving.front_door`
    prints for free ports, this pod's Triton ports and a scratch folder: the pod's file with just those changed."""
    reason = front_door.unavailable_reason()
    if reason:
        pytest.skip(f"no nginx here for the front door: {reason}")
    scratch = tmp_path_factory.mktemp("front-door")
    http_port, metrics_port = ports.free_port(), ports.free_port()
    printed = subprocess.run([sys.executable, "-m", "trtis.serving.front_door", "--http-port", str(http_port),
                              "--metrics-port", str(metrics_port), "--triton-http", str(pod.ports.http),
                              "--triton-metrics", str(pod.ports.metrics), "--scratch-parent", str(scratch)],
                             capture_output=True, text=True, timeout=60, check=True).stdout
    expected = FRONT_DOOR_CONF.read_text()
    for pods, ours in (("0.0.0.0:8080;", f"0.0.0.0:{http_port};"), ("0.0.0.0:8082;", f"0.0.0.0:{metrics_port};"),
                       ("127.0.0.1:8000;", f"127.0.0.1:{pod.ports.http};"),
                       ("127.0.0.1:8002;", f"127.0.0.1:{pod.ports.metrics};"), ('"/tmp/nginx/', f'"{scratch}/nginx/')):
        assert pods in expected
        expected = expected.replace(pods, ours)
    assert printed == expected
    command = front_door_container(render("cpu"))["command"]
    conf = scratch / "etc" / "front-door.conf"
    conf.parent.mkdir()
    conf.write_text(printed)
    (scratch / "nginx").mkdir()  # the pod's emptyDir at /tmp/nginx
    local = [str(front_door.binary()), *command[1:]]
    local[local.index("/tmp/nginx")] = str(scratch / "nginx")
    local[local.index("/etc/trtis/front-door.conf")] = str(conf)
    log = scratch / "nginx.log"
    with open(log, "wb") as out:
        nginx = subprocess.Popen(local, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True)
    try:
        listening = wait_until(lambda: ports.listening("127.0.0.1", http_port)
                               and ports.listening("127.0.0.1", metrics_port), 10, still=lambda: nginx.poll() is None)
        assert listening is not None, log.read_text()
        yield Door(http_port, metrics_port, nginx)
    finally:
        nginx.send_signal(signal.SIGQUIT)  # the image's stop signal: requests in flight finish
        try:
            nginx.wait(10)
        except subprocess.TimeoutExpired:
            nginx.kill()
            nginx.wait()


def test_http_inference_and_metrics_pass_through_the_front_door(pod, door):
    np.testing.assert_array_equal(echoed(door.http), DATA)
    with urllib.request.urlopen(f"http://127.0.0.1:{door.http}/v2/health/ready", timeout=10) as response:
        assert response.status == 200
    with urllib.request.urlopen(f"http://127.0.0.1:{door.metrics}/metrics", timeout=10) as response:
        assert b"nv_inference_request_success{" in response.read()
    connection = http.client.HTTPConnection("127.0.0.1", door.metrics, timeout=10)
    try:
        connection.request("POST", "/metrics", body=b"{}")
        assert connection.getresponse().status == 403, "metrics: GET only"
    finally:
        connection.close()


def test_the_front_door_refuses_a_request_that_crashes_triton_and_the_server_lives(pod, door):
    """4 MiB of form data (curl's default type) crashed Triton 2.51's HTTP server; the door answers 415."""
    server = pod.state()["server"]
    connection = http.client.HTTPConnection("127.0.0.1", door.http, timeout=60)
    try:
        connection.request("POST", "/v2/health/live", body=bytes(4 << 20),
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
        response = connection.getresponse()
        status, answer = response.status, response.read()
    finally:
        connection.close()
    assert status == 415 and json.loads(answer)["error"], answer[:300]
    ok, said = pod.probe()
    assert ok, said
    assert pod.state()["server"] == server, "the same tritonserver: no restart"
    np.testing.assert_array_equal(echoed(door.http), DATA)
