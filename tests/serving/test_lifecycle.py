"""start.sh --stop signals only what it provably started: stale, foreign, pid-1 and non-leader pid
files are reported and removed, never obeyed; a server killed with its supervisor leaves no
backend process or shared memory behind after the next start or --stop."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from servers import listening, start_script
from trtis.serving import mps, process, state_folder


@pytest.fixture
def foreigner():
    """Someone else's harmless process: a ``sleep`` in its own session, and a child of it that
    leads no process group."""
    leader = subprocess.Popen(["sh", "-c", "sleep 300 & wait"], start_new_session=True)
    deadline = time.monotonic() + 10
    while not process.children(leader.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    yield leader, process.children(leader.pid)[0]
    os.killpg(leader.pid, signal.SIGKILL)
    leader.wait()


def untouched(pid: int) -> bool:
    return process.state(pid) in ("S", "R")


def finished_pid() -> int:
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


def recorded(pid: int, start_shift: int = 0) -> dict:
    """A state file's record of ``pid``, as it is now (or started ``start_shift`` ticks apart)."""
    found = process.identify(pid)
    record = found.to_json() if found else {"pid": pid, "start": 1, "boot": "", "exe": ""}
    return {**record, "start": record["start"] + start_shift}


STATE_CASES = {
    "stale": lambda f, child: {"pid": finished_pid(), "start": 1, "boot": "", "exe": ""},
    "foreign, as it runs now": lambda f, child: recorded(f.pid),
    "foreign, started at another time": lambda f, child: recorded(f.pid, start_shift=-100),
    "not a group leader": lambda f, child: recorded(child),
    "pid 1": lambda f, child: recorded(1),
}


@pytest.mark.parametrize("case", STATE_CASES)
def test_stop_never_obeys_a_state_file_that_does_not_prove_its_processes(case, foreigner, tmp_path):
    leader, child = foreigner
    record = STATE_CASES[case](leader, child)
    (tmp_path / state_folder.STATE_FILE).write_text(json.dumps(
        {"supervisor": record, "server": record, "shm_prefix": "trtis_00000000_", "status": "ready"}))
    stopped = start_script(tmp_path / "none", tmp_path).stop()
    assert stopped.returncode == 0 and "No server was running" in stopped.stdout, stopped.stderr
    assert "stale state file" in stopped.stderr and "signalled nothing" in stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert not (tmp_path / state_folder.STATE_FILE).exists()
    assert untouched(leader.pid) and untouched(child)


@pytest.mark.parametrize("case", ["foreign", "not a group leader", "pid 1", "stale", "not a number"])
def test_stop_never_obeys_a_bare_pid_file_of_another_process(case, foreigner, tmp_path):
    leader, child = foreigner
    text = {"foreign": leader.pid, "not a group leader": child, "pid 1": 1, "stale": finished_pid(),
            "not a number": "12ab"}[case]
    (tmp_path / state_folder.PID_FILE).write_text(f"{text}\n")
    stopped = start_script(tmp_path / "none", tmp_path).stop()
    assert stopped.returncode == 0 and "No server was running" in stopped.stdout, stopped.stderr
    assert "stale pid file" in stopped.stderr and "Traceback" not in stopped.stderr
    assert not (tmp_path / state_folder.PID_FILE).exists()
    assert untouched(leader.pid) and untouched(child)


def kill_server_and_supervisor(state_dir: Path) -> tuple[str, list[int]]:
    """kill -9 the supervisor, then tritonserver, while its backend processes are busy (stopped
    here: an idle stub notices its server died and exits, a busy one lived on under pid 1);
    returns the shm prefix and the orphaned stubs."""
    state = json.loads((state_dir / state_folder.STATE_FILE).read_text())
    stubs = list(process.stubs(state["shm_prefix"]))
    assert stubs, "the server runs no backend process"
    for pid in stubs:
        os.kill(pid, signal.SIGSTOP)
    for role in ("supervisor", "server"):
        os.kill(state[role]["pid"], signal.SIGKILL)
        while process.identify(state[role]["pid"]) is not None:
            time.sleep(0.05)
    assert len(leftovers(state["shm_prefix"], stubs)) > len(stubs), "no orphan to clean up"
    return state["shm_prefix"], stubs


def leftovers(shm_prefix: str, stubs: list[int]) -> list:
    return [pid for pid in stubs if process.identify(pid)] + sorted(Path("/dev/shm").glob(f"{shm_prefix}*"))


def test_a_killed_server_leaves_nothing_after_the_next_start_or_stop(echo_repository, tmp_path):
    script = start_script(echo_repository, tmp_path)
    (tmp_path / state_folder.PID_FILE).write_text("1\n")  # it once made start refuse forever
    try:
        first = script.start()
        assert first.returncode == 0 and "stale pid file" in first.stderr, first.stderr
        prefix, stubs = kill_server_and_supervisor(tmp_path)

        again = script.start()
        assert again.returncode == 0, again.stderr
        assert "stale state file" in again.stderr and "orphaned backend process" in again.stderr
        assert leftovers(prefix, stubs) == []

        prefix, stubs = kill_server_and_supervisor(tmp_path)
        stopped = script.stop()
        assert "orphaned backend process" in stopped.stderr and leftovers(prefix, stubs) == []
        assert not (tmp_path / state_folder.STATE_FILE).exists()
    finally:
        script.stop()


def test_stop_ends_a_running_server_with_its_backend_processes_and_shared_memory(echo_repository, tmp_path):
    script = start_script(echo_repository, tmp_path)
    assert script.start().returncode == 0
    state = json.loads((tmp_path / state_folder.STATE_FILE).read_text())
    stubs = list(process.stubs(state["shm_prefix"]))
    stopped = script.stop()
    assert stopped.returncode == 0 and "Server stopped." in stopped.stdout
    assert leftovers(state["shm_prefix"], stubs) == []
    assert not any(process.identify(state[role]["pid"]) for role in ("supervisor", "server"))


@pytest.mark.parametrize("prefix", ["", "trtis_", "triton_python_backend_shm_region_", "trtis_0000000_"])
def test_a_damaged_prefix_can_match_no_other_servers_processes_or_memory(prefix, tmp_path):
    with pytest.raises(ValueError, match="not a server's shared-memory prefix"):
        process.stubs(prefix)
    with pytest.raises(ValueError, match="not a server's shared-memory prefix"):
        process.remove_shared_memory(prefix)
    (tmp_path / state_folder.STATE_FILE).write_text(json.dumps({"supervisor": None, "server": None, "shm_prefix": prefix}))
    stopped = start_script(tmp_path / "none", tmp_path).stop()
    assert stopped.returncode == 0 and "Traceback" not in stopped.stderr


@pytest.mark.skipif(shutil.which(mps.CONTROL) is not None, reason="this host has CUDA MPS: the refusal cannot happen")
def test_mps_without_the_nvidia_driver_is_refused_with_the_reason_and_leaves_nothing(echo_repository, tmp_path):
    script = start_script(echo_repository, tmp_path)
    refused = script.start("--mps")
    assert refused.returncode == 1 and mps.CONTROL in refused.stderr and "without --mps" in refused.stderr, refused.stderr
    assert not state_folder.running(tmp_path) and not (tmp_path / mps.FOLDER).exists()
    assert not listening(script.http)
