"""`deploy/` is validated, not just kept: the image's build file, the compose stack, the
Kubernetes manifests as kustomize renders them, and the dashboard and alerts.

- `kubectl kustomize deploy/kubernetes` renders, and every object passes `kubernetes-validate`
  (strict: an unknown field is an error) against the newest Kubernetes schema it ships.
- `deploy/compose.yaml` validates against the Compose Specification's JSON schema, vendored in
  `tests/schemas/` (see its README for where it comes from).
- Every `HOTLINE_*` setting that the image, compose or the manifests pass is documented in
  `docs/settings.md` and read by `Settings.from_env`.
- Every metric the Grafana dashboard and the alert rules use is registered by a real node.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from subprocess import PIPE
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from backend import database
from backend.core.settings import Settings
from tests.conftest import RunningHotline

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
CONTAINERFILE = DEPLOY / "Containerfile"
KUSTOMIZATION = DEPLOY / "kubernetes"
# The pod a person opens for `hotline keys init` and the other terminal steps.
ADMIN_KUSTOMIZATION = KUSTOMIZATION / "admin"
DASHBOARD = DEPLOY / "monitoring" / "grafana-dashboard.json"
ALERTS = DEPLOY / "monitoring" / "prometheus-alerts.yaml"
COMPOSE_SCHEMA = Path(__file__).resolve().parent / "schemas" / "compose-spec.json"
SETTINGS_DOC = ROOT / "docs" / "settings.md"
HOTLINE = str(Path(sys.executable).parent / "hotline")
SETTING = re.compile(r"\bHOTLINE_[A-Z0-9_]+\b")
METRIC = re.compile(r"\bhotline_[a-z0-9_]+\b")
# Settings whose values are secrets: passed by reference (a Secret, an env file), never written.
SECRET_SETTINGS = {
    "HOTLINE_DATABASE_URL",
    "HOTLINE_BOT_SECRET",
    "HOTLINE_RECEIPT_SECRET",
    "HOTLINE_TELEGRAM_TOKEN",
    "HOTLINE_TELEGRAM_WEBHOOK_SECRET",
    "HOTLINE_KAKAO_SECRET",
}


def rendered(kustomization: Path = KUSTOMIZATION) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl is not None, "kubectl (with kustomize) is needed to render deploy/kubernetes"
    out = subprocess.run(
        [kubectl, "kustomize", str(kustomization)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def of_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    if obj["kind"] == "Pod":
        spec: dict[str, Any] = obj["spec"]
        return spec
    if obj["kind"] in {"Deployment", "Job"}:
        template: dict[str, Any] = obj["spec"]["template"]["spec"]
        return template
    return None


def containers(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for obj in objects:
        spec = pod_spec(obj)
        for container in spec["containers"] if spec is not None else []:
            yield obj["metadata"]["name"], container


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


# -- Kubernetes ---------------------------------------------------------------------------------


def test_the_manifests_render_and_pass_kubernetes_validate() -> None:
    objects = rendered()
    version = kubernetes_validate.latest_version()
    for obj in [*objects, *rendered(ADMIN_KUSTOMIZATION)]:
        kubernetes_validate.validate(obj, version, strict=True)
    deployments = of_kind(objects, "Deployment")
    assert set(deployments) == {"hotline-backend", "hotline-bot"}
    assert set(of_kind(objects, "Service")) == {"hotline-backend", "hotline-bot"}
    assert set(of_kind(objects, "PodDisruptionBudget")) == {"hotline-backend", "hotline-bot"}
    hpa = of_kind(objects, "HorizontalPodAutoscaler")
    assert [h["spec"]["scaleTargetRef"]["name"] for h in hpa.values()] == ["hotline-bot"]
    assert list(of_kind(objects, "Job")) == ["hotline-migrate"]
    assert of_kind(objects, "Ingress")
    assert not of_kind(objects, "Secret"), "secrets are referenced, never written"


def test_every_container_is_probed_bounded_and_locked_down() -> None:
    objects = rendered()
    for name, container in containers([*objects, *rendered(ADMIN_KUSTOMIZATION)]):
        assert container["image"].endswith(":0.1.0"), name
        assert container["resources"]["requests"], name
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True, name
        assert security["allowPrivilegeEscalation"] is False, name
        assert security["capabilities"]["drop"] == ["ALL"], name
    for deployment in of_kind(objects, "Deployment").values():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        (container,) = pod["containers"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In", "this check reads In only"
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def _egress_ports(objects: list[dict[str, Any]], labels: dict[str, str]) -> set[int]:
    ports: set[int] = set()
    for policy in of_kind(objects, "NetworkPolicy").values():
        if _selects(policy["spec"]["podSelector"], labels):
            for rule in policy["spec"].get("egress", []):
                ports |= {p["port"] for p in rule.get("ports", [])}
    return ports


def test_only_the_backend_and_its_migration_reach_postgresql() -> None:
    objects = rendered()
    pods = {
        o["metadata"]["name"]: o["spec"]["template"]["metadata"]["labels"]
        for o in objects
        if o["kind"] in {"Deployment", "Job"}
    }
    everything = {"app.kubernetes.io/name": "hotline", "app.kubernetes.io/component": "x"}
    deny = of_kind(objects, "NetworkPolicy")["hotline-default-deny"]["spec"]
    assert _selects(deny["podSelector"], everything)
    assert deny["policyTypes"] == ["Ingress", "Egress"], "nothing but what is allowed"
    reaching = {name for name, labels in pods.items() if 5432 in _egress_ports(objects, labels)}
    assert reaching == {"hotline-backend", "hotline-migrate"}
    assert 6379 in _egress_ports(objects, pods["hotline-bot"])
    database_side = of_kind(objects, "NetworkPolicy")["postgresql-only-from-backend"]["spec"]
    (allowed,) = database_side["ingress"][0]["from"]
    assert {n for n, labels in pods.items() if _selects(allowed["podSelector"], labels)} == {
        "hotline-backend",
        "hotline-migrate",
    }


# -- compose ------------------------------------------------------------------------------------


def test_compose_validates_against_the_compose_specification() -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    stack = compose()
    validator.validate(stack)
    broken = json.loads(json.dumps(stack))
    broken["services"]["redis"]["comand"] = ["redis-server"]
    assert not validator.is_valid(broken), "the schema is in force: a misspelt key is refused"


def test_the_compose_stack_is_the_one_described() -> None:
    services = compose()["services"]
    redis = services["redis"]["command"]
    assert redis[redis.index("--appendfsync") + 1] == "always"
    assert redis[redis.index("--appendonly") + 1] == "yes"
    by_role: dict[str, list[str]] = {}
    for name, service in services.items():
        if service.get("image", "").startswith("hotline:"):
            by_role.setdefault(service["command"][0], []).append(name)
            assert service["read_only"] is True and service["user"] == "10001:10001", name
    assert len(by_role["backend"]) == 2 and len(by_role["bot"]) == 2
    assert by_role["migrate"] == ["migrate"] and by_role["keys"] == ["keys-init"]
    assert services["keys-init"]["profiles"] == ["setup"], "a person runs it, once"
    for bot in by_role["bot"]:
        assert services[bot]["environment"]["HOTLINE_TELEGRAM_WEBHOOK_URL"].startswith("https://")
    for backend in by_role["backend"]:
        condition = services[backend]["depends_on"]["migrate"]["condition"]
        assert condition == "service_completed_successfully"
        assert "db" in services[backend]["networks"]
    reaching_db = {n for n, s in services.items() if "db" in s.get("networks", [])}
    assert reaching_db == {"postgres", "migrate", "keys-init", *by_role["backend"]}
    assert "ports" in services["proxy"] and all(
        "ports" not in s for n, s in services.items() if n != "proxy"
    ), "only the proxy is published"


def test_the_image_installs_from_the_lock_and_runs_unprivileged() -> None:
    lines = [
        line.strip()
        for line in CONTAINERFILE.read_text().replace("\\\n", " ").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert sum(line.startswith("FROM ") for line in lines) >= 2, "multi-stage"
    runs = " ".join(line for line in lines if line.startswith("RUN "))
    assert "--require-hashes" in runs and "-r requirements.lock" in runs
    assert "pip install --no-deps --no-build-isolation ." in runs
    final = lines[max(i for i, line in enumerate(lines) if line.startswith("FROM ")) :]
    (user,) = [line for line in final if line.startswith("USER ")]
    assert not user.split()[1].startswith(("0", "root"))
    assert 'ENTRYPOINT ["hotline"]' in final
    for line in lines:
        if line.startswith(("ENV ", "ARG ")):
            assert not SECRET_SETTINGS & set(SETTING.findall(line)), "no secret baked in"


# -- settings -----------------------------------------------------------------------------------


def _passed_settings() -> dict[str, set[str]]:
    """Each HOTLINE_* name the deployment files pass, and where."""
    passed: dict[str, set[str]] = {}

    def add(names: Iterator[str] | set[str] | list[str], where: str) -> None:
        for name in names:
            if SETTING.fullmatch(name):
                passed.setdefault(name, set()).add(where)

    for line in CONTAINERFILE.read_text().splitlines():
        if line.strip().startswith(("ENV", "HOTLINE_")):
            add(re.findall(r"(HOTLINE_[A-Z0-9_]+)=", line), "Containerfile")
    for name, service in compose()["services"].items():
        add(list(service.get("environment", {})), f"compose {name}")
    objects = [*rendered(), *rendered(ADMIN_KUSTOMIZATION)]
    for obj in objects:
        if obj["kind"] == "ConfigMap":
            add(list(obj["data"]), f"ConfigMap {obj['metadata']['name']}")
    for name, container in containers(objects):
        add([e["name"] for e in container.get("env", [])], name)
        for ref in container.get("env", []):
            add([ref.get("valueFrom", {}).get("configMapKeyRef", {}).get("key", "")], name)
    return passed


class _Reads(Mapping[str, str]):
    """An environment that remembers which names `Settings.from_env` asked for."""

    def __init__(self, values: dict[str, str]) -> None:
        self._values = values
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def test_every_setting_the_deployment_passes_is_documented_and_read(tmp_path: Path) -> None:
    passed = _passed_settings()
    assert {"HOTLINE_DATABASE_URL", "HOTLINE_METRICS_PORT", "HOTLINE_BOT_SECRET"} <= set(passed)
    env = _Reads({"HOTLINE_DATA_DIR": str(tmp_path)})
    Settings.from_env(env)
    documented = set(SETTING.findall(SETTINGS_DOC.read_text()))
    for name, where in sorted(passed.items()):
        assert name in documented, f"{name} (passed by {', '.join(sorted(where))}) is undocumented"
        assert name in env.asked, f"{name} (passed by {', '.join(sorted(where))}) is never read"


def test_secrets_are_referenced_never_written() -> None:
    for obj in rendered():
        if obj["kind"] == "ConfigMap":
            assert not SECRET_SETTINGS & set(obj["data"])
    for name, container in containers([*rendered(), *rendered(ADMIN_KUSTOMIZATION)]):
        for entry in container.get("env", []):
            if entry["name"] in SECRET_SETTINGS:
                assert "secretKeyRef" in entry["valueFrom"], (name, entry["name"])
    for name, service in compose()["services"].items():
        for key, value in service.get("environment", {}).items():
            if key in SECRET_SETTINGS:
                assert re.search(r"\$\{[A-Z_]+:[?-]", str(value)), (name, key)


# -- the migration step -------------------------------------------------------------------------


async def test_hotline_migrate_brings_an_empty_database_to_the_newest_schema(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
    env |= {"HOTLINE_DATA_DIR": str(tmp_path / "data"), "HOTLINE_DATABASE_URL": url}
    process = await asyncio.create_subprocess_exec(
        HOTLINE, "migrate", env=env, stdout=PIPE, stderr=PIPE
    )
    _, errors = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, errors.decode()
    engine: AsyncEngine = database.create_engine(url)
    try:
        assert await database.at_head(engine)
    finally:
        await engine.dispose()


# -- dashboard and alerts -----------------------------------------------------------------------


def _exported_names(registry: CollectorRegistry) -> set[str]:
    """Every series name a family exports, whether or not it has a sample yet."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "gauge": ("",),
    }
    return {
        family.name + suffix
        for family in registry.collect()
        for suffix in suffixes.get(family.type, ("",))
    }


def _exprs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            else:
                yield from _exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _exprs(item)


def test_the_dashboard_and_alerts_use_only_metrics_a_node_registers(
    hotline: RunningHotline,
) -> None:
    exported = _exported_names(hotline.node.metrics.registry)
    dashboard = json.loads(DASHBOARD.read_text())
    alerts = yaml.safe_load(ALERTS.read_text())
    used = {m for expr in _exprs([dashboard, alerts]) for m in METRIC.findall(expr)}
    assert len(used) >= 12
    assert used <= exported, f"not registered: {sorted(used - exported)}"
    rules = {r["alert"]: r for group in alerts["groups"] for r in group["rules"]}
    for wanted in (
        "hotline_intake_oldest_entry_seconds",
        "hotline_dead_letters",
        "hotline_queue_sla_missed",
        "hotline_counselors_on_shift",
    ):
        assert any(wanted in rule["expr"] for rule in rules.values()), wanted
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert rule["annotations"]["summary"], name
    dashboard_metrics = {m for expr in _exprs(dashboard) for m in METRIC.findall(expr)}
    families = {name.removesuffix("_total").removesuffix("_bucket") for name in exported}
    everything = {f for f in families if not f.endswith(("_created", "_count", "_sum"))}
    shown = {m.removesuffix("_total").removesuffix("_bucket") for m in dashboard_metrics}
    assert everything - {"hotline_centre_gauges_readable"} <= shown, "a panel for each"
