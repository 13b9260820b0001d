"""The docs' code blocks, found by the marker on the line above each, and a checkout to run them in.

A fenced block of commands or code carries ``<!-- test: NAME -->`` (a test runs it as written) or
``<!-- illustrative: why -->`` (shown, not run). Tests run the blocks of one name, in page order,
in a stand-in for a clone where ``convert.sh`` has run (``checkout``); the only changes are the
server's address: the test server's ports replace 7000/7001/7002, are appended to ``./start.sh``,
and are given to ``client.sh``/``bench.sh`` lines that rely on the default address.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGES = ("README.md", "docs/serving.md", "docs/converter.md", "docs/detection.md", "docs/zh-CN/quickstart.md")
RUNNABLE = {"python", "bash", "sh", "shell", "console"}
MARKER = re.compile(r"<!-- (test|illustrative): (.+?) -->")
# Which test runs the blocks of each name (".ci/run": CI runs them as its own commands).
RUN_BY = {
    "ci": ".ci/run",
    **{name: "tests/detection/test_readme.py" for name in (
        "readme-start", "readme-detect", "readme-client", "readme-bench", "readme-stop", "serving-lifecycle",
        "serving-python", "serving-curl", "serving-infer", "serving-metrics", "serving-stats", "serving-logs",
        "detection-dataset", "detection-evaluate", "detection-client", "zh-client")},
    **{name: "tests/docs/test_pages.py" for name in ("converter-example", "converter-run", "detection-train")},
    "converter-prepare": "tests/trtis/test_prepare_step.py",
}


@dataclass(frozen=True)
class Block:
    page: str
    line: int  # of the opening fence, from 1
    language: str
    code: str
    marker: tuple[str, str] | None  # ("test", name) or ("illustrative", reason)

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def blocks(page: str) -> list[Block]:
    """Every fenced block of ``page`` (a path from the repository root), in order."""
    lines = (ROOT / page).read_text().splitlines()
    found, index = [], 0
    while index < len(lines):
        opening = re.fullmatch(r"```(\S*)\s*", lines[index])
        if not opening:
            index += 1
            continue
        end = next((i for i in range(index + 1, len(lines)) if lines[i].strip() == "```"), None)
        assert end is not None, f"{page}:{index + 1}: a code block is not closed"
        marker = MARKER.fullmatch(lines[index - 1].strip()) if index else None
        found.append(Block(page, index + 1, opening[1], "\n".join(lines[index + 1:end]) + "\n",
                           (marker[1], marker[2]) if marker else None))
        index = end + 1
    return found


def blocks_named(name: str) -> list[Block]:
    """The blocks marked ``<!-- test: NAME -->``, over the pages in order; at least one."""
    found = [b for page in PAGES for b in blocks(page) if b.marker == ("test", name)]
    assert found, f"no block of the docs is marked 'test: {name}'"
    return found


@dataclass(frozen=True)
class Ports:
    http: int
    grpc: int
    metrics: int


def addressed(code: str, ports: Ports, shell: bool = True) -> str:
    """``code`` for a server on ``ports``: its addresses replaced and, in shell code, the ports given
    to ``./start.sh`` and the address to ``client.sh``/``bench.sh`` lines that rely on the default."""
    for default, port in ((7000, ports.http), (7001, ports.grpc), (7002, ports.metrics)):
        code = code.replace(f"127.0.0.1:{default}", f"127.0.0.1:{port}")
    if not shell:
        return code
    given = {"./start.sh": f" --http-port {ports.http} --grpc-port {ports.grpc} --metrics-port {ports.metrics}",
             "example/detection/client.sh": f" --url 127.0.0.1:{ports.grpc}",
             "example/detection/bench.sh": f" --url 127.0.0.1:{ports.grpc} "
                                           f"--metrics-url http://127.0.0.1:{ports.metrics}/metrics"}
    lines = []
    for line in code.splitlines():
        command, comment = re.fullmatch(r"(.*?)(\s+#.*)?", line).groups()
        for script, flags in given.items():
            if command.lstrip().startswith(script) and "--url" not in command:
                command += flags
        lines.append(command + (comment or ""))
    return "\n".join(lines) + "\n"


def checkout(folder: Path, repository: Path | None = None) -> Path:
    """A stand-in for a clone where ``convert.sh`` wrote ``repository``: ``start.sh`` and ``example/``
    copied (so the paths they derive from their own place, ``.triton/``, ``reports/``,
    ``detections/``, land here), the trained weights and ``.venv`` linked."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy2(ROOT / "start.sh", folder / "start.sh")
    shutil.copytree(ROOT / "example", folder / "example", ignore=shutil.ignore_patterns("__pycache__", "weights"))
    (folder / "example" / "detection" / "weights").symlink_to(ROOT / "example" / "detection" / "weights")
    (folder / ".venv").symlink_to(ROOT / ".venv")
    if repository is not None:
        (folder / "model_repository").symlink_to(repository)
    return folder


def run_shell(code: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``code`` with bash from ``cwd``, stopping at the first failing command; raises on failure."""
    run = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", code], cwd=cwd, capture_output=True, text=True,
                         timeout=timeout, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert run.returncode == 0, f"exit status {run.returncode} of\n{code}\nstdout:\n{run.stdout[-3000:]}\n" \
                                f"stderr:\n{run.stderr[-3000:]}"
    return run
