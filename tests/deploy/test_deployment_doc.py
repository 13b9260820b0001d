"""docs/deployment.md: the commands that can run here are run as written; the others are marked
illustrative, with what they need."""
from __future__ import annotations

import os
import re
import subprocess
import sys

from rendered_manifests import ROOT

DOC = ROOT / "docs" / "deployment.md"
BLOCK = re.compile(r"(?:<!-- illustrative: (?P<needs>[^>]+?) -->\n)?```(?P<language>\w*)\n(?P<body>.*?)```", re.S)


def blocks() -> list[re.Match]:
    return list(BLOCK.finditer(DOC.read_text()))


def test_every_block_is_run_here_or_marked_with_what_it_needs():
    runnable = [b for b in blocks() if not b["needs"] and b["language"]]
    assert all(b["language"] == "bash" for b in runnable), "only shell blocks can run unmarked"
    illustrative = {b["needs"] for b in blocks() if b["needs"]}
    assert "needs a cluster" in illustrative and all(n.startswith("needs ") for n in illustrative)
    assert any("kubectl apply -k deploy/kubernetes/overlays/cpu" in b["body"] for b in blocks() if b["needs"])


# The objects each overlay renders that kubernetes-validate has a schema for (all but the ServiceMonitor).
VALIDATED = 10


def test_runnable_commands_render_and_validate_both_overlays():
    """Each unmarked block runs as written, with .venv/bin on PATH as the page says; those that render
    the overlays validate every object, and the front door's check finds the committed file current."""
    runnable = [b["body"] for b in blocks() if not b["needs"] and b["language"] == "bash"]
    assert any("kubectl kustomize deploy/kubernetes/overlays/gpu" in body for body in runnable)
    assert any("python -m trtis.serving.front_door | diff - deploy/kubernetes/base/front-door.conf" in body
               for body in runnable)
    env = {**os.environ, "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])}
    for body in runnable:
        run = subprocess.run(["bash", "-euo", "pipefail", "-c", body], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=300)
        assert run.returncode == 0, f"{body}\nfailed:\n{run.stdout}{run.stderr}"
        if "kubectl kustomize" in body:
            passed = re.findall(r"^INFO - passed for resource (\S+)", run.stdout, re.M)
            assert "deployment/triton" in passed and len(passed) == body.count("kubectl kustomize") * VALIDATED
            assert "ServiceMonitor" in run.stdout and "ERROR" not in run.stdout
        else:
            assert run.stdout == "", f"{body}\nprinted:\n{run.stdout}"
