"""The supervisor never gives up, and is honest while it works: 20 faults in a row are all healed
(restarts back off, capped), a hung model is restarted, a dead supervisor is reported, and two
simultaneous starts from one state folder give exactly one server and one clear refusal."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from tritonclient.utils import InferenceServerException

from servers import START, start_script, wait_until
from trtis import config, repository
from trtis.serving import ServerConfig, health, process, serve, state_folder
from trtis.serving.supervisor import RestartPolicy, Supervision

HEAL_BOUND_S = 30
STUCK = b'''import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        time.sleep(3600)  # a backend alive but deadlocked: it answers nothing
'''


def state(state_dir) -> dict:
    return json.loads((state_dir / state_folder.STATE_FILE).read_text())


def is_ready(server) -> bool:
    return health.ready(f"http://{server.http_url}/v2/health/ready", timeout=1)


def echoed(server) -> np.ndarray:
    with triton_grpc.InferenceServerClient(server.grpc_url) as client:
        data = triton_grpc.InferInput("data", [1, 4], "FP32")
        data.set_data_from_numpy(np.ones((1, 4), np.float32))
        return client.infer("echo", [data], client_timeout=30).as_numpy("echo")


def test_the_backoff_doubles_after_the_quick_restarts_and_is_capped():
    policy = RestartPolicy(free=3, first_s=1, max_s=30)
    assert [policy.delay(n) for n in range(1, 11)] == [0, 0, 0, 1, 2, 4, 8, 16, 30, 30]


def test_twenty_faults_in_a_row_are_all_healed(echo_repository, tmp_path):
    """Each kill of tritonserver is healed; health says no while the supervisor waits, and why."""
    with serve(echo_repository, ServerConfig(supervision=Supervision(max_backoff_s=1)), state_dir=tmp_path) as server:
        heal_times, said_while_down = [], set()
        for fault in range(20):
            os.kill(state(tmp_path)["server"]["pid"], signal.SIGKILL)
            assert wait_until(lambda: not is_ready(server), 10) is not None, f"fault {fault}: never seen down"
            problem = state_folder.health(tmp_path, server.host, server.ports.http)
            assert problem is not None, f"fault {fault}: --health said healthy while the server was down"
            said_while_down.add(problem.split(":")[0])
            healed = wait_until(lambda: is_ready(server) and state(tmp_path)["status"] == "ready", HEAL_BOUND_S)
            assert healed is not None, f"fault {fault} was not healed within {HEAL_BOUND_S} s"
            heal_times.append(healed)
        np.testing.assert_array_equal(echoed(server), np.ones((1, 4), np.float32))
        assert state(tmp_path)["restarts"] == 20
        log = server.log_file.read_text(errors="replace")
        assert log.count("restarting the server") == 20 and "restarting the server in 1 s" in log
        assert "giving up" not in log
        assert state_folder.health(tmp_path, server.host, server.ports.http) is None
    print(f"20 faults healed in {min(heal_times):.1f}-{max(heal_times):.1f} s each; --health said: {sorted(said_while_down)}")


def test_a_front_door_killed_with_its_workers_left_behind_is_replaced(echo_repository, tmp_path):
    """kill -9 of nginx's master leaves its workers holding the ports: the supervisor ends them too
    before it starts the door again, which then serves."""
    with serve(echo_repository, state_dir=tmp_path) as server:
        master = state(tmp_path)["proxy"]["pid"]
        workers = process.children(master)
        assert workers, "nginx runs workers"
        os.kill(master, signal.SIGKILL)
        assert wait_until(lambda: state(tmp_path)["proxy"]["pid"] != master and is_ready(server), 30) is not None
        assert all(process.state(pid) in (None, "Z") for pid in workers), "the old workers still run"
        assert "Address already in use" not in server.log_file.read_text(errors="replace")


def test_a_hung_model_is_restarted_without_a_false_alarm_for_a_busy_one(echo_model, tmp_path):
    stuck = config.model_config("stuck", backend="python", max_batch_size=8, inputs=[config.Tensor("data", np.float32, [4])],
                                outputs=[config.Tensor("echo", np.float32, [4])])
    repository.write_repository(tmp_path / "repository", [echo_model, repository.Model(stuck, STUCK)])
    with serve(tmp_path / "repository", ServerConfig(supervision=Supervision(hang_timeout_s=4)),
               state_dir=tmp_path / "state") as server:
        busy_until = time.monotonic() + 8  # the echo model busy for longer than the hang timeout: no restart
        while time.monotonic() < busy_until:
            echoed(server)
        assert state(tmp_path / "state")["restarts"] == 0, "a busy model was taken for a hung one"
        failure: list[Exception] = []

        def ask_the_stuck_model():
            with triton_grpc.InferenceServerClient(server.grpc_url) as client:
                data = triton_grpc.InferInput("data", [1, 4], "FP32")
                data.set_data_from_numpy(np.ones((1, 4), np.float32))
                try:
                    client.infer("stuck", [data], client_timeout=60)
                except InferenceServerException as error:
                    failure.append(error)

        # One request runs into the deadlock, the next two wait behind it: what users of a hung model see.
        asking = [threading.Thread(target=ask_the_stuck_model) for _ in range(3)]
        for thread in asking:
            thread.start()
        down = wait_until(lambda: not is_ready(server), 30)
        assert down is not None, "the hung model was never noticed"
        print(f"readiness said no {down:.1f} s after the requests to the hung model (hang timeout 4 s)")
        for thread in asking:
            thread.join(60)
        assert len(failure) == 3, "a request to the hung model neither failed nor was answered"
        assert wait_until(lambda: is_ready(server), HEAL_BOUND_S) is not None
        np.testing.assert_array_equal(echoed(server), np.ones((1, 4), np.float32))
        assert "model stuck version 1 has had requests waiting" in server.log_file.read_text(errors="replace")


def test_a_dead_supervisor_is_reported_and_stop_still_ends_everything(echo_repository, tmp_path):
    script = start_script(echo_repository, tmp_path)
    assert script.start().returncode == 0
    recorded = state(tmp_path)
    os.kill(recorded["supervisor"]["pid"], signal.SIGKILL)
    assert wait_until(lambda: not process.ProcessId.from_json(recorded["supervisor"]).alive(), 10) is not None
    problem = state_folder.health(tmp_path, "127.0.0.1", script.http)
    assert problem is not None and "supervisor" in problem and "not running" in problem
    assert script.stop().returncode == 0
    for role in ("server", "proxy"):
        if recorded.get(role):
            assert not process.ProcessId.from_json(recorded[role]).alive(), f"the {role} outlived --stop"


def test_two_simultaneous_starts_give_one_server_and_one_clear_refusal(echo_repository, tmp_path):
    script = start_script(echo_repository, tmp_path / "state")
    before = set(process.named("tritonserver"))
    runs = [subprocess.Popen(  # the same command line, twice at once
        [str(START), "--model-repository", str(echo_repository), "--state-dir", str(script.state_dir),
         "--http-port", str(script.http), "--grpc-port", str(script.grpc), "--metrics-port", str(script.metrics)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(run.wait(300), *run.communicate()) for run in runs]
    try:
        codes = sorted(code for code, _, _ in results)
        assert codes == [0, 1], results
        refusal = next(err for code, _, err in results if code == 1)
        assert "is still running or starting" in refusal
        assert state_folder.health(script.state_dir, "127.0.0.1", script.http) is None, "the winner is not the one recorded"
        winner = state(script.state_dir)
        assert set(process.named("tritonserver")) - before == {winner["server"]["pid"]}, "not exactly one new server"
    finally:
        stopped = script.stop()
    assert "Server stopped" in stopped.stdout
    assert not process.ProcessId.from_json(winner["server"]).alive(), "a server was orphaned"


def test_a_refused_start_writes_no_key(echo_repository, tmp_path):
    script = start_script(echo_repository, tmp_path / "first")
    assert script.start().returncode == 0
    try:
        clash = start_script(echo_repository, tmp_path / "second")
        clash.http = script.http
        refused = clash.start()
        assert refused.returncode != 0 and "already listens" in refused.stderr
        assert not (tmp_path / "second" / state_folder.ADMIN_KEY_FILE).exists()
    finally:
        script.stop()


@pytest.fixture(autouse=True)
def no_leftovers():
    before = set(process.named("tritonserver")) | set(process.named("nginx"))
    yield
    assert wait_until(lambda: not ((set(process.named("tritonserver")) | set(process.named("nginx"))) - before), 30) \
        is not None, "a server or its front door outlived its test"
