"""Who may call the API: every endpoint x {no token, wrong token, token without the scope,
the right token}, from a real uvicorn server over loopback; idempotency keys per token; the
journal of each request; tokens created, aged, and the API refused off loopback without any."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from calltexts_assets.api.app import create_app
from calltexts_assets.api.tokens import TokenAgeCollector, TokenCheck, new_token, token_digest
from calltexts_assets.ops.cli import main
from calltexts_assets.settings import ApiToken, load_settings, parse_token_line
from calltexts_assets.state.audit import AuditJournal
from calltexts_assets.state.idempotency import IdempotencyStore
from calltexts_assets.state.ledger import Ledger
from calltexts_sandbox.server import serve_in_thread
from calltexts_tests.api.test_api import BODY, POLICY, FakeLauncher

TODAY = datetime.now(UTC).date()
SECRETS = {name: f"ctk_{name}-secret" for name in ("runner", "reader", "metrics", "runner2")}
SCOPES = {
    "runner": {"export:run"},
    "reader": {"export:read"},
    "metrics": {"metrics:read"},
    "runner2": {"export:run"},
}
TOKENS = [
    ApiToken(name, token_digest(SECRETS[name]), frozenset(SCOPES[name]), TODAY) for name in SECRETS
]


@dataclass
class Api:
    url: str
    launcher: FakeLauncher
    journal: AuditJournal
    log_dir: Path

    def call(self, method: str, path: str, token: str | None, **kw: object) -> httpx.Response:
        headers = dict(kw.pop("headers", {}))  # type: ignore[arg-type]
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.request(method, self.url + path, headers=headers, timeout=10, **kw)

    def export(self, token: str | None, key: str | None = None) -> httpx.Response:
        headers = {"Idempotency-Key": key or str(uuid.uuid4())}
        return self.call("POST", "/tasks/call_export", token, json=BODY, headers=headers)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    root = tmp_path_factory.mktemp("api")
    ledger = Ledger(f"sqlite:///{root / 'ledger.sqlite'}")
    launcher = FakeLauncher()
    journal = AuditJournal(ledger.engine, root / "logs")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TokenAgeCollector(TOKENS, 90, lambda: TODAY))
    app = create_app(
        launcher,
        IdempotencyStore(ledger.engine),
        policy=POLICY,
        metrics_registry=registry,
        run_details=lambda state: {"progress": {"done": 1}, "artifacts": {"registry": "s3://b/k"}},
        tokens=TokenCheck(TOKENS),
        journal=journal,
    )
    with serve_in_thread(app) as server:
        yield Api(server.url, launcher, journal, root / "logs")
    ledger.dispose()


@pytest.fixture(scope="module")
def readers_run(api: Api) -> str:
    """A run launched by the `runner` token, for the status endpoint."""
    response = api.export(SECRETS["runner"])
    assert response.status_code == 202
    return response.json()["run_id"]


CASES = {  # the token presented: none, one never issued, one without the scope, the right one
    "no token": None,
    "wrong token": "ctk_never-issued",
    "without the scope": SECRETS["metrics"],
    "right token": "right",
}
ENDPOINTS = {
    # endpoint: (method, the right token, the right answer, the scope a wrong one lacks)
    "POST /tasks/call_export": ("POST", "runner", 202, "export:run"),
    "GET /tasks/call_export/{run_id}": ("GET", "reader", 200, "export:read"),
    "GET /metrics": ("GET", "metrics", 200, "metrics:read"),
    "GET /healthz": ("GET", None, 200, None),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_the_matrix(api: Api, readers_run: str, endpoint: str, case: str) -> None:
    method, right, ok, scope = ENDPOINTS[endpoint]
    token = CASES[case]
    if token == "right":
        token = SECRETS[right] if right else None
    if endpoint.endswith("/metrics") and case == "without the scope":
        token = SECRETS["reader"]  # the metrics token is the right one here
    if endpoint.startswith("POST"):
        response = api.export(token)
    else:
        path = endpoint.split(" ")[1].replace("{run_id}", readers_run)
        response = api.call(method, path, token)
    challenge = response.headers.get("www-authenticate", "")
    if scope is None or case == "right token":
        assert response.status_code == ok, response.text
        assert not challenge
    elif case == "no token":
        assert response.status_code == 401
        assert challenge == 'Bearer realm="calltexts"'
    elif case == "wrong token":
        assert response.status_code == 401
        assert challenge == 'Bearer realm="calltexts", error="invalid_token"'
    else:
        assert response.status_code == 403
        assert challenge == f'Bearer realm="calltexts", error="insufficient_scope", scope="{scope}"'
    print(f"MATRIX {endpoint:34} {case:18} -> {response.status_code}")


def test_a_runner_reads_its_own_runs_without_the_files(api: Api, readers_run: str) -> None:
    own = api.call("GET", f"/tasks/call_export/{readers_run}", SECRETS["runner"])
    assert own.status_code == 200 and own.json()["progress"] == {"done": 1}
    assert "artifacts" not in own.json()
    other = api.call("GET", f"/tasks/call_export/{readers_run}", SECRETS["runner2"])
    assert other.status_code == 403
    reader = api.call("GET", f"/tasks/call_export/{readers_run}", SECRETS["reader"])
    assert reader.json()["artifacts"] == {"registry": "s3://b/k"}


def test_an_idempotency_key_belongs_to_its_token(api: Api) -> None:
    key = str(uuid.uuid4())
    first = api.export(SECRETS["runner"], key)
    again = api.export(SECRETS["runner"], key)
    other = api.export(SECRETS["runner2"], key)
    assert first.status_code == again.status_code == other.status_code == 202
    assert again.json()["run_id"] == first.json()["run_id"]
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert other.json()["run_id"] != first.json()["run_id"]  # not a replay of runner's run
    tokens = {api.launcher.runs[r.json()["run_id"]].token_name for r in (first, other)}
    assert tokens == {"runner", "runner2"}


def test_every_request_is_journalled_without_any_secret(api: Api, readers_run: str) -> None:
    key = str(uuid.uuid4())
    api.export(SECRETS["runner"], key)
    api.export("ctk_never-issued")
    api.export(SECRETS["metrics"])
    api.call("GET", f"/tasks/call_export/{readers_run}", SECRETS["reader"])
    events = api.journal.since(datetime.now(UTC) - timedelta(minutes=5))
    launched = [e for e in events if e.event == "export" and e.idempotency_key == key]
    assert len(launched) == 1
    (entry,) = launched
    assert (entry.actor, entry.via, entry.client, entry.outcome) == (
        "runner", "api", "127.0.0.1", "202",
    )  # fmt: skip
    assert (entry.period_from, entry.period_to, entry.summaries) == (
        "2026-11-01",
        "2026-11-03",
        True,
    )
    assert entry.run_id in api.launcher.runs
    assert any(e.event == "export" and e.outcome == "401 invalid_token" for e in events)
    assert any(
        e.event == "export" and e.actor == "metrics" and e.outcome == "403 insufficient_scope"
        for e in events
    )
    assert any(
        e.event == "run_read" and e.actor == "reader" and e.run_id == readers_run for e in events
    )
    written = "".join(p.read_text() for p in (api.log_dir / "audit").glob("*.jsonl"))
    assert len(written.splitlines()) == len(api.journal.since(datetime(2000, 1, 1, tzinfo=UTC)))
    for secret in [*SECRETS.values(), "ctk_never-issued"]:
        assert secret not in written


def test_an_old_token_is_due_for_rotation(caplog: pytest.LogCaptureFixture) -> None:
    old = ApiToken("old", "a" * 64, frozenset({"metrics:read"}), date(2026, 1, 1))
    undated = ApiToken("undated", "b" * 64, frozenset({"metrics:read"}))
    fresh = ApiToken("fresh", "c" * 64, frozenset({"metrics:read"}), date(2026, 11, 30))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TokenAgeCollector([old, undated, fresh], 90, lambda: date(2026, 12, 7)))
    with caplog.at_level(logging.WARNING):
        due = {
            n: registry.get_sample_value("calltexts_api_token_rotation_due", {"token": n})
            for n in ("old", "undated", "fresh")
        }
        registry.get_sample_value("calltexts_api_token_age_days", {"token": "old"})
    assert due == {"old": 1, "undated": 1, "fresh": 0}
    assert registry.get_sample_value("calltexts_api_token_age_days", {"token": "old"}) == 340
    warned = [r.getMessage() for r in caplog.records]
    assert sum("API token old is 340 days old" in m for m in warned) == 1  # once a day
    assert any("undated has no creation day" in m for m in warned)


def test_token_create_prints_the_secret_once_and_its_line(capsys: pytest.CaptureFixture) -> None:
    assert main(["api", "token", "create", "crm", "--scopes", "export:run,export:read"]) == 0
    out = capsys.readouterr().out.splitlines()
    secret, line = out[1].strip(), out[3].strip()
    token = parse_token_line(line)
    assert token.name == "crm" and token.sha256 == token_digest(secret)
    assert token.scopes == {"export:run", "export:read"} and token.created == TODAY
    assert main(["api", "token", "create", "crm", "--scopes", "export:write"]) == 2
    assert "scopes must be some of" in capsys.readouterr().err
    secret2, _ = new_token("crm", ["metrics:read"], TODAY)
    assert secret2 != secret


def test_without_tokens_the_api_refuses_a_public_host(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.delenv("CALLTEXTS_API_TOKENS", raising=False)
    monkeypatch.delenv("CALLTEXTS_API_TOKENS_FILE", raising=False)
    assert not load_settings().api_tokens
    assert main(["api", "serve", "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "CALLTEXTS_API_TOKENS" in err[0] and "0.0.0.0" in err[0]


def test_the_journal_lines_are_json(api: Api) -> None:
    for path in (api.log_dir / "audit").glob("*.jsonl"):
        for line in path.read_text().splitlines():
            assert json.loads(line)["via"] == "api"
