"""deploy/: the Kubernetes overlays render and validate, and they, the compose stack and the Grafana dashboard
agree with the service they deploy - probe paths answer on a real server, and every metric they use exists."""

from __future__ import annotations

import copy
import json
import math
import re
import shutil
import subprocess
import sys

import grpc
import kubernetes_validate
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.operations.launch import ROOT
from service.operations.settings import Settings
from service.protocols.repository import control_deadline_s
from tests.e2e.calls import every_endpoint_answers_correctly

pytestmark = pytest.mark.e2e

K8S = ROOT / "deploy" / "k8s"
COMPOSE = ROOT / "deploy" / "compose"
OVERLAYS = ("cpu", "gpu")
# The oldest Kubernetes still in upstream support when this was written, and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.32.0", kubernetes_validate.latest_version())
EXPECTED_KINDS = {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}


def kustomize_command() -> list[str]:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    pytest.fail("rendering the overlays needs kustomize or kubectl (kubectl kustomize); install either")


def render(overlay: str) -> dict[str, dict]:
    """The overlay's objects, by kind."""
    output = subprocess.run([*kustomize_command(), str(K8S / "overlays" / overlay)], check=True,
                            capture_output=True, text=True, timeout=60).stdout
    objects = [document for document in yaml.safe_load_all(output) if document]
    by_kind = {document["kind"]: document for document in objects}
    assert len(by_kind) == len(objects), "one object per kind expected"
    return by_kind


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request) -> tuple[str, dict[str, dict]]:
    return request.param, render(request.param)


def container_of(objects: dict[str, dict]) -> dict:
    (container,) = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    return container


def test_every_object_validates_against_the_kubernetes_schemas(overlay):
    _, objects = overlay
    assert set(objects) == EXPECTED_KINDS
    for version in KUBERNETES_VERSIONS:
        for document in objects.values():
            kubernetes_validate.validate(document, version, strict=True)


def test_the_validator_rejects_a_broken_manifest(overlay):
    """The check above can fail: a misspelt probe field and a string replica count are caught."""
    _, objects = overlay
    broken = copy.deepcopy(objects["Deployment"])
    container_of({"Deployment": broken})["readynessProbe"] = container_of({"Deployment": broken}).pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)
    broken = copy.deepcopy(objects["Deployment"])
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_probes_use_the_service_port_and_paths_that_answer(overlay, client, server):
    _, objects = overlay
    container = container_of(objects)
    port, grpc_port = container["ports"]
    assert port["containerPort"] == Settings().port == 3000  # the image's MODEL_SERVER_PORT
    assert grpc_port["containerPort"] == Settings().grpc_port == 3001
    probes = {kind: container[kind]["httpGet"] for kind in ("startupProbe", "readinessProbe")}
    assert {probe["port"] for probe in probes.values()} == {port["name"]}
    assert probes["readinessProbe"]["path"] == probes["startupProbe"]["path"] == "/readyz"
    for probe in probes.values():
        assert client.get(probe["path"]).status_code == 200, probe
    # Liveness: gRPC's standard health service (what a `grpc:` probe asks), served on the gRPC port.
    assert container["livenessProbe"]["grpc"]["port"] == grpc_port["containerPort"]
    with grpc.insecure_channel(server.grpc_target) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    assert {p["targetPort"] for p in objects["Service"]["spec"]["ports"]} == {"http", "grpc"}
    annotations = objects["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert client.get(annotations["prometheus.io/path"]).status_code == 200
    assert int(annotations["prometheus.io/port"]) == port["containerPort"]


def test_pods_run_locked_down_and_drain_longer_than_a_request(overlay):
    _, objects = overlay
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    container = container_of(objects)
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert {mount["mountPath"] for mount in container["volumeMounts"]} == {"/tmp"}  # BENTOML_HOME in the image
    assert container["resources"]["requests"] and container["resources"]["limits"]
    env = {variable["name"]: variable for variable in container["env"]}
    timeout = float(env["MODEL_SERVER_REQUEST_TIMEOUT_S"]["value"])
    assert timeout == Settings().request_timeout_s
    assert pod["terminationGracePeriodSeconds"] >= timeout + 10  # plus BentoML's 30 s worker deadline margin
    assert env["MODEL_SERVER_WORKERS"]["valueFrom"]["resourceFieldRef"]["resource"] == "limits.cpu"
    assert env["MODEL_SERVER_ORT_THREADS"]["value"] == "1"


def test_service_hpa_and_budget_point_at_the_deployment(overlay):
    _, objects = overlay
    deployment = objects["Deployment"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    for selector in (objects["Service"]["spec"]["selector"],
                     objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
                     deployment["spec"]["selector"]["matchLabels"]):
        assert selector and selector.items() <= pod_labels.items()
    assert objects["Service"]["spec"]["ports"][0]["targetPort"] == "http"
    hpa = objects["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert "modelserver_requests_in_progress" in {metric["pods"]["metric"]["name"]
                                                  for metric in hpa["metrics"] if metric["type"] == "Pods"}


def test_the_gpu_overlay_asks_for_a_gpu_node():
    objects = render("gpu")
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    container = container_of(objects)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] and pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert container["image"].endswith(":gpu")
    assert {"name": "MODEL_SERVER_PROVIDER", "value": "cuda"} in container["env"]
    assert render("cpu")["Deployment"]["metadata"]["name"] != objects["Deployment"]["metadata"]["name"]


PROMQL_WORDS = {"sum", "by", "rate", "histogram_quantile", "le", "without", "avg", "max", "min", "on"}


def metric_names(expression: str) -> set[str]:
    """Series names a PromQL expression reads: words followed by { or [, minus functions and keywords."""
    names = set(re.findall(r"\b([a-z_][a-z0-9_]*)\s*[{\[]", expression))
    return {name for name in names if name not in PROMQL_WORDS}


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((COMPOSE / "grafana" / "dashboards" / "modelserver.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def exposed_metric_names(client) -> set[str]:
    """Series names on a real server's /metrics after one good call per endpoint and two bad requests."""
    assert every_endpoint_answers_correctly(client)
    assert client.post("/sentiment/classify", json={"text": "a wrong field name"}).status_code == 400
    not_an_image = client.post("/digits/classify-image", content=b"not an image", headers={"content-type": "image/png"})
    assert not_an_image.status_code == 415
    text = client.get("/metrics").text
    return set(re.findall(r"^([a-z_][a-z0-9_]*)(?:\{| )", text, re.M))


def test_every_dashboard_and_autoscaling_metric_is_exposed_by_the_service(client):
    exposed = exposed_metric_names(client)
    expressions = dashboard_expressions()
    used = set().union(*map(metric_names, expressions))
    assert len(expressions) >= 8 and used
    # modelserver_rejected_requests_total appears once something is rejected (tests/e2e/test_overload.py and
    # test_security.py check that it counts); the shadow's series once a model has a shadow version
    # (tests/e2e/test_model_repository.py).
    appear_later = {"modelserver_rejected_requests_total", "modelserver_shadow_agreed_total",
                    "modelserver_shadow_compared_total", "modelserver_shadow_distance_sum"}
    assert used - appear_later <= exposed, used - exposed
    rules = yaml.safe_load((K8S / "monitoring" / "prometheus-adapter-rules.yaml").read_text())
    (rule,) = rules["rules"]["custom"]
    assert metric_names(rule["seriesQuery"]) <= exposed
    assert rule["name"]["as"] == "modelserver_requests_in_progress"


def test_compose_stack_scrapes_the_service_and_provisions_the_dashboard():
    compose = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"modelserver", "prometheus", "grafana"}
    assert all(port.startswith("127.0.0.1:") for service in services.values() for port in service.get("ports", []))
    assert services["modelserver"]["read_only"] and "/tmp" in services["modelserver"]["tmpfs"][0]
    prometheus = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())
    (job,) = prometheus["scrape_configs"]
    assert job["metrics_path"] == "/metrics" and job["static_configs"][0]["targets"] == ["modelserver:3000"]
    datasources = yaml.safe_load((COMPOSE / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    dashboard = json.loads((COMPOSE / "grafana" / "dashboards" / "modelserver.json").read_text())
    uids = {panel["datasource"]["uid"] for panel in dashboard["panels"] if "datasource" in panel}
    assert uids == {datasources["datasources"][0]["uid"]}
    for mount in services["grafana"]["volumes"] + services["prometheus"]["volumes"]:
        assert (COMPOSE / mount.split(":")[0]).exists(), mount


# KServe ------------------------------------------------------------------------------------------

KSERVE = K8S / "kserve"


@pytest.fixture(scope="module")
def kserve() -> dict[str, dict]:
    output = subprocess.run([*kustomize_command(), str(KSERVE)], check=True, capture_output=True, text=True,
                            timeout=60).stdout
    return {document["kind"]: document for document in yaml.safe_load_all(output) if document}


def test_kserve_runtime_container_validates_as_a_kubernetes_container(kserve):
    runtime = kserve["ServingRuntime"]["spec"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "modelserver-runtime-check"},
           "spec": {"containers": runtime["containers"], "volumes": runtime["volumes"]}}
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(pod, version, strict=True)


def test_kserve_inference_service_speaks_v2_through_the_runtime(kserve):
    runtime, service = kserve["ServingRuntime"], kserve["InferenceService"]
    assert runtime["apiVersion"] == "serving.kserve.io/v1alpha1" and service["apiVersion"] == "serving.kserve.io/v1beta1"
    model = service["spec"]["predictor"]["model"]
    assert model["protocolVersion"] == "v2" and "v2" in runtime["spec"]["protocolVersions"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["modelFormat"]["name"] in {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    predictor = service["spec"]["predictor"]
    assert set(predictor) <= {"minReplicas", "maxReplicas", "scaleMetric", "scaleTarget", "model",
                              "terminationGracePeriodSeconds"}
    assert predictor["terminationGracePeriodSeconds"] >= Settings().request_timeout_s + 10


def test_kserve_runtime_uses_the_settings_of_the_kubernetes_deployment(kserve):
    (ours,) = kserve["ServingRuntime"]["spec"]["containers"]
    base = yaml.safe_load((K8S / "base" / "deployment.yaml").read_text())["spec"]["template"]["spec"]
    (theirs,) = base["containers"]
    for key in ("env", "resources", "lifecycle", "volumeMounts"):
        assert ours[key] == theirs[key], key
    assert ours["ports"] == theirs["ports"][:1], "KServe routes one port: HTTP (gRPC in deploy/k8s/kserve-grpc)"
    assert theirs["securityContext"].items() <= ours["securityContext"].items()
    assert ours["image"].startswith("registry.example.com/modelserver")


def test_the_kserve_grpc_variant_routes_the_grpc_port():
    output = subprocess.run([*kustomize_command(), str(K8S / "kserve-grpc")], check=True, capture_output=True, text=True,
                            timeout=60).stdout
    documents = {document["kind"]: document for document in yaml.safe_load_all(output) if document}
    (container,) = documents["ServingRuntime"]["spec"]["containers"]
    assert container["ports"] == [{"name": "h2c", "containerPort": Settings().grpc_port, "protocol": "TCP"}]
    assert {"name": "MODEL_SERVER_GRPC_PORT", "value": str(Settings().grpc_port)} in container["env"]
    assert documents["InferenceService"]["spec"]["predictor"]["model"]["protocolVersion"] == "grpc-v2"
    assert "grpc-v2" in documents["ServingRuntime"]["spec"]["protocolVersions"]


def test_kserve_probe_paths_answer_on_a_real_server(kserve, client):
    (container,) = kserve["ServingRuntime"]["spec"]["containers"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert client.get(container[probe]["httpGet"]["path"]).status_code == 200, probe


# Docker Swarm ------------------------------------------------------------------------------------

SWARM = ROOT / "deploy" / "swarm"


def test_the_swarm_stack_carries_the_settings_of_the_kubernetes_deployment():
    stack = yaml.safe_load((SWARM / "stack.yml").read_text())["services"]["modelserver"]
    base = yaml.safe_load((K8S / "base" / "deployment.yaml").read_text())["spec"]["template"]["spec"]
    (container,) = base["containers"]
    kubernetes_env = {item["name"]: item.get("value") for item in container["env"]}
    for name, value in kubernetes_env.items():
        if value is not None:  # the worker count comes from limits.cpu there, from the CPU limit here
            assert stack["environment"][name] == value, name
    assert stack["user"] == f"{base['securityContext']['runAsUser']}:{base['securityContext']['runAsGroup']}"
    assert stack["read_only"] is container["securityContext"]["readOnlyRootFilesystem"] is True
    assert stack["cap_drop"] == container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert any(volume["target"] == "/tmp" and volume["type"] == "tmpfs" for volume in stack["volumes"])
    assert int(stack["stop_grace_period"].rstrip("s")) == base["terminationGracePeriodSeconds"]
    assert container["readinessProbe"]["httpGet"]["path"] in " ".join(stack["healthcheck"]["test"])
    deploy = stack["deploy"]
    assert deploy["update_config"]["order"] == "start-first" and deploy["update_config"]["failure_action"] == "rollback"
    assert deploy["endpoint_mode"] == "dnsrr"
    assert float(deploy["resources"]["limits"]["cpus"]) * deploy["replicas"] <= 2, "four replicas must fit two cores"
    assert stack["environment"]["MODEL_SERVER_WORKERS"] == str(math.ceil(float(deploy["resources"]["limits"]["cpus"])))


def test_the_balancer_checks_readiness_and_retries_what_a_draining_replica_refuses():
    config = (SWARM / "haproxy.cfg").read_text()
    assert "option httpchk GET /readyz" in config
    assert re.search(r"retry-on .*conn-failure.*503", config)
    assert "server-template" in config and "tasks.modelserver:3000" in config
    assert "tasks.modelserver:3001 proto h2" in config and "bind :8081 proto h2" in config
    control = re.search(r"^backend control\n(.*?)(?:^\S|\Z)", config, re.MULTILINE | re.DOTALL).group(1)
    assert int(re.search(r"timeout server (\d+)s", control).group(1)) >= control_deadline_s(Settings())  # a slow load


# Retries where they are safe, beyond the Swarm balancer -----------------------------------------------------


def test_the_ingress_retries_inference_and_never_model_management():
    inference, control = yaml.safe_load_all((K8S / "ingress" / "ingress.yaml").read_text())
    for ingress in (inference, control):
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(ingress, version, strict=True)
    retry = inference["metadata"]["annotations"]
    assert set(retry["nginx.ingress.kubernetes.io/proxy-next-upstream"].split()) == \
        {"error", "timeout", "http_503", "non_idempotent"}
    assert retry["nginx.ingress.kubernetes.io/proxy-request-buffering"] == "on"
    assert int(retry["nginx.ingress.kubernetes.io/proxy-read-timeout"]) > Settings().request_timeout_s
    assert control["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-next-upstream"] == "off"
    assert int(control["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= \
        control_deadline_s(Settings())
    (path,) = control["spec"]["rules"][0]["http"]["paths"]
    assert path["path"] == "/v2/repository" and path["pathType"] == "Prefix"


def test_the_retrying_client_example_runs(server):
    example = ROOT / "docs" / "examples" / "retrying_client.py"
    finished = subprocess.run([sys.executable, str(example), server.url, server.grpc_target], capture_output=True,
                              text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.splitlines() == ["HTTP: 200 positive", "gRPC: positive"]
