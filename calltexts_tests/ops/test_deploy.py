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

from calltexts_assets.registry.schema import DEFAULT_SCHEMA_PATH
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


def test_the_stack_is_the_database_code_server_webserver_daemon_api_and_prometheus(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "code", "webserver", "daemon", "api", "prometheus"}
    # One image for the code server, the webserver, the daemon, the API and every run.
    image = services["code"]["image"]
    assert services["code"]["build"]["dockerfile"] == "deploy/docker/Dockerfile"
    assert (REPO / "deploy" / "docker" / "Dockerfile").exists()
    assert {services[s]["image"] for s in ("webserver", "daemon", "api")} == {image}
    assert services["code"]["environment"]["DAGSTER_CURRENT_IMAGE"] == image
    assert services["webserver"]["entrypoint"][0] == "dagster-webserver"
    assert services["daemon"]["entrypoint"][:2] == ["dagster-daemon", "run"]
    assert services["api"]["entrypoint"][:3] == ["calltexts", "api", "serve"]
    # The daemon starts run containers through the host's engine.
    assert "/var/run/docker.sock:/var/run/docker.sock" in services["daemon"]["volumes"]
    for name in ("code", "webserver", "daemon", "api"):
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
        env = services[name]["environment"]
        assert env["DAGSTER_PG_URL"].startswith("postgresql+psycopg2://")
        assert env["CALLTEXTS_DATABASE_URL"].startswith("postgresql+psycopg2://")
        assert set(DAGSTER_ENVIRONMENT) <= set(env)
        assert "calltexts_var:/opt/calltexts/var" in services[name]["volumes"]


def test_only_the_ui_and_the_api_are_published_and_the_database_is_internal(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    published = {name: s["ports"] for name, s in services.items() if s.get("ports")}
    # The UI has no authentication of its own: loopback only (behind the organisation's proxy).
    assert published == {"webserver": ["127.0.0.1:3000:3000"], "api": ["8080:8080"]}
    internal = {name for name, n in compose["networks"].items() if n and n.get("internal")}
    assert internal == {"calltexts_internal"}
    for name in ("postgres", "prometheus"):
        assert services[name]["networks"] == ["calltexts_internal"]


def test_the_api_reads_its_tokens_and_prometheus_its_scrape_token_from_secrets(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    api_env = services["api"]["environment"]
    assert services["api"]["secrets"] == ["api_tokens"]
    assert api_env["CALLTEXTS_API_TOKENS_FILE"] == "/run/secrets/api_tokens"
    assert "CALLTEXTS_API_TOKENS" not in api_env
    assert api_env["DAGSTER_WEBSERVER_URL"] == "http://webserver:3000"
    assert services["prometheus"]["secrets"] == ["metrics_token"]
    assert set(compose["secrets"]) == {"api_tokens", "metrics_token"}
    prometheus = _yaml(REPO / "deploy" / "prometheus" / "prometheus.yml")
    assert prometheus["rule_files"] == ["alerts.yml"]
    [job] = prometheus["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"] == [{"targets": ["api:8080"]}]
    assert job["authorization"]["credentials_file"] == "/run/secrets/metrics_token"
    dockerfile = (REPO / "deploy" / "prometheus" / "Dockerfile").read_text()
    assert "COPY prometheus.yml alerts.yml /etc/prometheus/" in dockerfile


def test_the_image_holds_every_package_the_project_installs() -> None:
    """The code image copies the repository through .dockerignore's allowlist: each top-level
    package of pyproject (calltexts_assets, calltexts_sandbox after the re-layout) is let in,
    the tests are not."""
    include = re.search(r"^include = \[(.*?)\]", (REPO / "pyproject.toml").read_text(), re.M)
    packages = {name.strip(' "*') for name in include[1].split(",")}
    allowed = {
        line[1:] for line in (REPO / ".dockerignore").read_text().splitlines() if line[:1] == "!"
    }
    assert packages and packages <= allowed
    assert "calltexts_tests" not in allowed
    # The data dictionary the registry check reads is package data, inside a package let in.
    assert DEFAULT_SCHEMA_PATH.relative_to(REPO).parts[0] in allowed
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert " -e . " in dockerfile
    # The same versions the tests passed with (make install).
    assert "requirements.lock" in allowed
    assert "--require-hashes -r requirements.lock" in dockerfile


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


# Variables of the stack itself, not of calltexts: the database's password, the folder of the
# secret files, the images' base.
STACK_ONLY = {"POSTGRES_PASSWORD", "CALLTEXTS_SECRETS_DIR", "BASE_IMAGE"}
# Read by boto3 itself (S3 storage), not by the settings.
AWS_CREDENTIALS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


def _example() -> set[str]:
    return {
        line.split("=", 1)[0]
        for line in (DOCKER / ".env.example").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    }


def test_secrets_come_only_from_the_env_file(compose: dict[str, Any]) -> None:
    text = (DOCKER / "docker-compose.yml").read_text()
    referenced = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    assert referenced and referenced <= _example()
    # Every variable of the example is one of the settings, or the stack's own.
    assert _example() - STACK_ONLY - AWS_CREDENTIALS <= set(VARIABLES)
    # Secrets are never written into the file: only references to the env file.
    secret_settings = {"BITRIX24_WEBHOOK_URL", "OPENAI_API_KEY", "AWS_SECRET_ACCESS_KEY"}
    for service in compose["services"].values():
        env = service.get("environment", {})
        for name in secret_settings & set(env):
            assert env[name] == f"${{{name}:-}}"
        for name in ("POSTGRES_PASSWORD", "DAGSTER_PG_URL", "CALLTEXTS_DATABASE_URL"):
            assert name not in env or "${POSTGRES_PASSWORD" in env[name]


# Settings the stack does not take from .env, each for a reason: paths fixed by the image (on
# the volume), the ledger's database (the stack's PostgreSQL), the API's Dagster address and
# tokens (set by the compose file, from the secret file), a knob of the tests, and boto3's
# other name for AWS_REGION.
NOT_FROM_THE_ENV_FILE = {
    "DAGSTER_HOME",
    "CALLTEXTS_HOME",
    "CALLTEXTS_DATABASE_URL",
    "DAGSTER_WEBSERVER_URL",
    "CALLTEXTS_API_TOKENS_FILE",
    "DAGSTER_CODE_LOCATION",
    "CALLTEXTS_API_TOKENS",
    "CALLTEXTS_RETRY_SCALE",
    "AWS_DEFAULT_REGION",
}


def test_every_setting_of_calltexts_can_be_given_to_the_stack() -> None:
    """.env.example is complete (#27): a setting missing from it cannot reach the runs."""
    assert set(VARIABLES) - NOT_FROM_THE_ENV_FILE <= _example()
    assert set(VARIABLES) >= NOT_FROM_THE_ENV_FILE  # no stale exception


def test_every_variable_passed_to_runs_is_set_by_the_stack(compose: dict[str, Any]) -> None:
    """DockerRunLauncher refuses to start a run when a variable it passes on is unset in the
    daemon (#27: every run failed so): the compose file sets each one (empty when .env leaves
    it out), .env.example lists each one, and the code server has the runs' settings."""
    passed = set(_yaml(DOCKER / "dagster.yaml")["run_launcher"]["config"]["env_vars"])
    daemon = set(compose["services"]["daemon"]["environment"])
    code = set(compose["services"]["code"]["environment"]) - {"DAGSTER_CURRENT_IMAGE"}
    assert passed <= daemon
    assert code == passed
    set_by_the_stack = {"DAGSTER_PG_URL", "CALLTEXTS_DATABASE_URL", *DAGSTER_ENVIRONMENT}
    assert passed - set_by_the_stack == _example() - STACK_ONLY


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
    # Run containers join the stack's networks and volume by their fixed names, and are
    # removed when they end (a finished one would hold the volume at teardown).
    networks = {n["name"] for n in compose["networks"].values()}
    assert set(launcher_config["config"]["networks"]) == networks
    kwargs = launcher_config["config"]["container_kwargs"]
    assert kwargs["auto_remove"] is True
    [mount] = kwargs["volumes"]
    assert mount.split(":")[0] == compose["volumes"]["calltexts_var"]["name"]
    # Dagster's own files a run writes (artifacts, compute logs) land on that volume.
    for key in ("local_artifact_storage", "compute_logs"):
        assert config[key]["config"]["base_dir"].startswith(mount.split(":")[1] + "/")
    passed_on = set(launcher_config["config"]["env_vars"]) - AWS_CREDENTIALS - {"DAGSTER_PG_URL"}
    assert passed_on <= set(VARIABLES) | set(DAGSTER_ENVIRONMENT)
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


def test_the_helm_values_and_the_stack_set_the_same_variables(
    helm_values: dict[str, Any], compose: dict[str, Any]
) -> None:
    """The chart's Secret is made from the stack's .env (README), and the values' plain
    settings are ones the stack passes to its runs too."""
    [deployment] = helm_values["dagster-user-deployments"]["deployments"]
    assert set(deployment["env"]) <= set(compose["services"]["code"]["environment"])
    assert "--from-env-file=deploy/docker/.env" in HELM_VALUES.read_text()
