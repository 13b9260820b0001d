"""docs/security.md's commands, run as written against a real server: only the ports, the state
folder and the repository change (and the soak's and the burst's, which need the detection example,
run in tests/detection/test_soak_docs.py)."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys

from servers import REPO_ROOT, START, start_script

DOC = REPO_ROOT / "docs" / "security.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)


def shell_commands() -> dict[str, str]:
    """The shell blocks, each named by what it does."""
    names = {"--grpc-tls-cert": "start", "curl": "admin call", "--health": "health", "supervisor probe": "probe",
             "--stop": "stop", "trtis.serving.soak": "soak", "trtis.serving.burst": "burst"}
    found = {}
    for block in blocks("sh"):
        name = next(name for key, name in names.items() if key in block)
        found[name] = block.strip()
    assert set(found) == set(names.values()), f"a command of docs/security.md is not run by a test: {found}"
    return found


def test_the_documented_commands_run_as_written(echo_repository, certificates, tmp_path, monkeypatch):
    script = start_script(echo_repository, tmp_path / ".triton")
    for name in ("server.pem", "server.key", "ca.pem"):
        shutil.copy(certificates[name], tmp_path / name)
    monkeypatch.chdir(tmp_path)  # the docs' relative paths: certificates here, state in .triton/
    local = {"./start.sh": f"{START} --model-repository {echo_repository} --state-dir {script.state_dir} "
                           f"--http-port {script.http} --grpc-port {script.grpc} --metrics-port {script.metrics}",
             "7000": str(script.http), "7001": str(script.grpc), "8000": str(script.http),
             "python -m": f"{sys.executable} -m"}

    def run(command: str) -> subprocess.CompletedProcess:
        for written, here in local.items():
            command = command.replace(written, here)
        return subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=300)

    commands = shell_commands()
    try:
        started = run(commands["start"])
        assert started.returncode == 0 and "(TLS)" in started.stdout, started.stderr
        assert '"model_stats"' in run(commands["admin call"]).stdout
        namespace: dict = {}
        python, = blocks("python")
        exec(python.replace("127.0.0.1:7001", f"127.0.0.1:{script.grpc}"), namespace)
        assert "model_stats" in str(namespace["statistics"])
        health = run(commands["health"])
        assert health.returncode == 0 and "healthy" in health.stdout, health.stdout + health.stderr
        assert run(commands["probe"]).returncode == 0
    finally:
        stopped = run(commands["stop"])
    assert stopped.returncode == 0 and "Server stopped." in stopped.stdout
    unhealthy = run(commands["health"])
    assert unhealthy.returncode == 1 and "no server is running" in unhealthy.stdout
