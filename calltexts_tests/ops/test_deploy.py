"""deploy/docker (the Docker stack) and deploy/helm (values of Dagster's chart) are valid
against what can be checked on this machine: the Compose Specification's and the chart's
schemas (the subsets the files use, calltexts_tests/ops/schemas/, sources in
docs/specs/dagster_deploy.md), Dagster's own config schema of the instance and of
DockerRunLauncher, and the wiring between the files."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from dagster._core.instance.config import dagster_instance_config
from dagster._core.launcher import RunLauncher
from dagster._serdes import ConfigurableClassData

from calltexts_assets.settings import DAGSTER_ENVIRONMENT, VARIABLES

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "deploy" / "docker"
HELM_VALUES = REPO / "deploy" / "helm" / "values.yaml"
SCHEMAS = Path(__file__).resolve().parent / "schemas"


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _yaml(DOCKER / "docker-compose.yml")


def test_the_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    jsonschema.validate(compose, _schema("compose_spec.subset.json"))


def test_a_key_the_specification_does_not_know_is_refused(compose: dict[str, Any]) -> None:
    broken = {**compose, "services": {**compose["services"], "daemon": {"command_line": "x"}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, _schema("compose_spec.subset.json"))


def test_the_stack_is_postgres_code_server_webserver_and_daemon(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "code", "webserver", "daemon"}
    # One image for the code server, the webserver, the daemon and every run container.
    image = services["code"]["image"]
    assert services["code"]["build"]["dockerfile"] == "deploy/docker/Dockerfile"
    assert (REPO / "deploy" / "docker" / "Dockerfile").exists()
    assert {services[s]["image"] for s in ("webserver", "daemon")} == {image}
    assert services["code"]["environment"]["DAGSTER_CURRENT_IMAGE"] == image
    assert services["webserver"]["entrypoint"][0] == "dagster-webserver"
    assert services["daemon"]["entrypoint"][:2] == ["dagster-daemon", "run"]
    # The daemon starts run containers through the host's engine.
    assert "/var/run/docker.sock:/var/run/docker.sock" in services["daemon"]["volumes"]
    for name in ("code", "webserver", "daemon"):
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
        env = services[name]["environment"]
        assert env["DAGSTER_PG_URL"].startswith("postgresql+psycopg2://")
        assert env["CALLTEXTS_DATABASE_URL"].startswith("postgresql+psycopg2://")
        assert set(DAGSTER_ENVIRONMENT) <= set(env)


def test_webserver_and_daemon_load_the_code_from_the_grpc_server(compose: dict[str, Any]) -> None:
    [location] = _yaml(DOCKER / "workspace.yaml")["load_from"]
    server = location["grpc_server"]
    assert server["host"] in compose["services"]
    dockerfile = (DOCKER / "Dockerfile").read_text()
    cmd = json.loads(re.search(r"^CMD (\[.*?\])$", dockerfile, re.M | re.S)[1].replace("\\\n", ""))
    assert cmd[:3] == ["dagster", "code-server", "start"]
    assert cmd[cmd.index("-p") + 1] == str(server["port"])
    assert cmd[cmd.index("-m") + 1] == "calltexts_assets.definitions"
    for name in ("webserver", "daemon"):
        entrypoint = compose["services"][name]["entrypoint"]
        assert entrypoint[entrypoint.index("-w") + 1].endswith("/workspace.yaml")


def test_secrets_come_only_from_the_env_file(compose: dict[str, Any]) -> None:
    text = (DOCKER / "docker-compose.yml").read_text()
    example = {
        line.split("=", 1)[0]
        for line in (DOCKER / ".env.example").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    }
    referenced = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    assert referenced and referenced <= example
    # Every variable of the example is one of the settings, or the database password.
    assert example - {"POSTGRES_PASSWORD"} <= set(VARIABLES)
    # Secrets are never written into the file: references to .env, or the env_file itself.
    secret_settings = {"BITRIX24_WEBHOOK_URL", "OPENAI_API_KEY", "BITRIX24_CLIENT_SECRET"}
    for service in compose["services"].values():
        env = service.get("environment", {})
        assert not secret_settings & set(env)
        for name in ("POSTGRES_PASSWORD", "DAGSTER_PG_URL", "CALLTEXTS_DATABASE_URL"):
            assert name not in env or "${POSTGRES_PASSWORD" in env[name]


def test_the_instance_of_the_stack_is_valid_for_dagster(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAGSTER_PG_URL", "postgresql+psycopg2://u:p@postgres:5432/dagster")
    config, _ = dagster_instance_config(str(DOCKER), "dagster.yaml")  # validated by Dagster
    launcher_config = config["run_launcher"]
    assert (launcher_config["module"], launcher_config["class"]) == (
        "dagster_docker",
        "DockerRunLauncher",
    )
    # Dagster checks the launcher's own fields against DockerRunLauncher's config schema.
    launcher = ConfigurableClassData(
        launcher_config["module"],
        launcher_config["class"],
        yaml.safe_dump(launcher_config["config"]),
    ).rehydrate(as_type=RunLauncher)
    assert type(launcher).__name__ == "DockerRunLauncher"
    # Run containers join the stack's network and volume by their fixed names.
    assert launcher_config["config"]["network"] == compose["networks"]["calltexts"]["name"]
    [mount] = launcher_config["config"]["container_kwargs"]["volumes"]
    assert mount.split(":")[0] == compose["volumes"]["calltexts_var"]["name"]
    aws = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    passed_on = set(launcher_config["config"]["env_vars"]) - aws - {"DAGSTER_PG_URL"}
    assert passed_on <= set(VARIABLES)
    assert config["concurrency"]["runs"]["max_concurrent_runs"] >= 2


def test_a_wrong_launcher_field_is_refused_by_dagster() -> None:
    with pytest.raises(Exception, match="network_name"):
        ConfigurableClassData(
            "dagster_docker", "DockerRunLauncher", yaml.safe_dump({"network_name": "calltexts"})
        ).rehydrate(as_type=RunLauncher)


@pytest.fixture(scope="module")
def helm_values() -> dict[str, Any]:
    return _yaml(HELM_VALUES)


def test_the_helm_values_follow_the_charts_schema(helm_values: dict[str, Any]) -> None:
    jsonschema.validate(helm_values, _schema("dagster_chart_values.subset.json"))


@pytest.mark.parametrize(
    "change",
    [
        {"runLauncher": {"type": "K8sRunLauncher", "config": {"k8sRunLauncher": {"image": "x"}}}},
        {"dagsterDaemon": {"runCoordinator": {"enabled": True, "type": "QueuedRunCoordinator",
                           "config": {"queuedRunCoordinator": {"maxConcurrentRun": 3}}}}},
        {"runCoordinator": {}},
    ],
)  # fmt: skip
def test_the_charts_schema_refuses_keys_it_does_not_have(
    helm_values: dict[str, Any], change: dict[str, Any]
) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**helm_values, **change}, _schema("dagster_chart_values.subset.json"))


def test_runs_are_kubernetes_jobs_behind_the_run_queue(helm_values: dict[str, Any]) -> None:
    assert helm_values["runLauncher"]["type"] == "K8sRunLauncher"
    coordinator = helm_values["dagsterDaemon"]["runCoordinator"]
    assert coordinator["enabled"] and coordinator["type"] == "QueuedRunCoordinator"
    queued = coordinator["config"]["queuedRunCoordinator"]
    assert queued["maxConcurrentRuns"] >= 2 and queued["tagConcurrencyLimits"]
    [deployment] = helm_values["dagster-user-deployments"]["deployments"]
    assert deployment["codeServerArgs"][:2] == ["-m", "calltexts_assets.definitions"]
    secret = {s["name"] for s in deployment["envSecrets"]}
    assert secret == {
        s["name"] for s in helm_values["runLauncher"]["config"]["k8sRunLauncher"]["envSecrets"]
    }
    # Plain env holds settings, never a secret: those come from the Secret.
    settings = set(deployment["env"])
    assert settings <= set(VARIABLES) | set(DAGSTER_ENVIRONMENT)
    secrets = {"BITRIX24_WEBHOOK_URL", "OPENAI_API_KEY", "CALLTEXTS_DATABASE_URL", "DAGSTER_PG_URL"}
    assert not settings & secrets
    assert int(deployment["env"]["CALLTEXTS_BACKFILL_RUN_DAYS"]) > 0
