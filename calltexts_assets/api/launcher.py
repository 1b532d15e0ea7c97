"""How the API starts and inspects export runs: a `Launcher` protocol and its Dagster form.

Why the GraphQL client for launching (checked against dagster 1.13.27):
- `DagsterGraphQLClient.submit_job_execution` is a public, documented API. It asks the
  running webserver, which already holds the code location (`calltexts_assets.definitions`),
  to create the run and submit it through the instance's run coordinator, exactly as the
  UI's "Launch run" does: the run queue and the `stt` pool limits of dagster.yaml apply,
  and the daemon starts the run worker.
- The alternative, `instance.submit_run(run_id, workspace)`, needs a workspace (a code
  server) inside the API process and `instance.create_run` with snapshots and origins
  assembled by hand through private modules (`dagster._core.workspace`, `dagster._cli`).
- `execute_job` / `materialize` run the job inside the caller, which would make an HTTP
  request last the length of a 60-day export.
Status is read from the instance itself (`DagsterInstance.get()`: the same dagster.yaml
as the webserver), which needs no webserver and sees runs launched by anyone.

A range over daily partitions is one run (the assets have `BackfillPolicy.single_run()`):
the partition range travels as the `dagster/asset_partition_range_start/_end` tags.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

from dagster import DagsterInstance, RunsFilter

from calltexts_assets.runlog.masking import mask_text

JOB_NAME = "calls_export"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
SUMMARY_TAG = "calltexts/generate_summary"
IDEMPOTENCY_TAG = "calltexts/idempotency_key"  # state.audit.API_KEY_TAG
TOKEN_TAG = "calltexts/api_token"  # the name of the token that launched the run
ACTOR_TAG = "actor"
ACTOR = "calltexts api"
SECONDS_PER_DAY = 0.5  # of launch wait per day of the period, on top of `timeout`


@dataclass(frozen=True)
class ExportRequest:
    period_from: date
    period_to: date
    generate_summary: bool | None  # None: the deployment's EXPORT_SUMMARY_ENABLED
    idempotency_key: str
    token_name: str | None = None  # None: no tokens configured (loopback only)


@dataclass(frozen=True)
class RunState:
    run_id: str
    status: str  # DagsterRunStatus name: QUEUED, STARTED, SUCCESS, FAILURE, ...
    tags: Mapping[str, str] = field(default_factory=dict)
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class LaunchError(RuntimeError):
    """The run could not be launched; the message is safe to show (credentials masked)."""


class Launcher(Protocol):
    def launch(self, request: ExportRequest) -> str:
        """Start one run of the export over the request's days; returns the run id."""
        ...

    def status(self, run_id: str) -> RunState | None:
        """The run's state, or None when there is no export run with that id."""
        ...

    def find(self, idempotency_key: str) -> str | None:
        """The run launched for this key (its tag), if one exists: a launch that timed out
        on our side may still have gone through."""
        ...


def run_tags(request: ExportRequest) -> dict[str, str]:
    tags = {
        RANGE_START_TAG: request.period_from.isoformat(),
        RANGE_END_TAG: request.period_to.isoformat(),
        IDEMPOTENCY_TAG: request.idempotency_key,
        ACTOR_TAG: ACTOR,
    }
    if request.token_name is not None:
        tags[TOKEN_TAG] = request.token_name
    if request.generate_summary is not None:
        tags[SUMMARY_TAG] = "true" if request.generate_summary else "false"
    return tags


def run_config(request: ExportRequest) -> dict[str, Any]:
    """`generate_summary` is the summaries asset's run config (see export_run.py)."""
    if request.generate_summary is None:
        return {}
    return {"ops": {"summaries": {"config": {"generate_summary": request.generate_summary}}}}


def _reason(exc: Exception, webserver_url: str) -> str:
    """A short reason from a DagsterGraphQLClientError (whose text quotes the whole query)."""
    if len(exc.args) >= 2:  # Dagster answered: (kind, message or list of errors)
        kind, body = exc.args[0], exc.args[1]
        if isinstance(body, list):
            body = "; ".join(
                str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in body
            )
        return f"{kind}: {body}"
    cause = exc.__cause__ or exc
    return f"cannot reach the Dagster webserver at {webserver_url} ({type(cause).__name__})"


def _timestamp(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value else None


def run_state(instance: DagsterInstance, run_id: str, job_name: str = JOB_NAME) -> RunState | None:
    records = instance.get_run_records(RunsFilter(run_ids=[run_id]), limit=1)
    if not records or records[0].dagster_run.job_name != job_name:
        return None
    record = records[0]
    run = record.dagster_run
    return RunState(
        run_id=run.run_id,
        status=run.status.value,
        tags=dict(run.tags),
        created_at=record.create_timestamp,
        started_at=_timestamp(record.start_time),
        finished_at=_timestamp(record.end_time),
    )


class DagsterLauncher:
    """Launch through the webserver's GraphQL API; read status from the Dagster instance."""

    def __init__(
        self,
        webserver_url: str,
        instance: Callable[[], DagsterInstance],
        *,
        job_name: str = JOB_NAME,
        location_name: str | None = None,
        timeout: int = 60,
    ) -> None:
        self.webserver_url = webserver_url
        self.instance = instance
        self.job_name = job_name
        self.location_name = location_name
        self.timeout = timeout

    def _client(self, timeout: float) -> Any:
        from dagster_graphql import DagsterGraphQLClient

        parts = urlsplit(self.webserver_url)
        if not parts.hostname:
            raise LaunchError(f"bad Dagster webserver URL: {mask_text(self.webserver_url)}")
        return DagsterGraphQLClient(
            parts.hostname,
            port_number=parts.port,
            use_https=parts.scheme == "https",
            path_prefix=parts.path.rstrip("/"),
            timeout=int(timeout),
        )

    def launch(self, request: ExportRequest) -> str:
        from dagster_graphql import DagsterGraphQLClientError

        # Dagster records one "materialization planned" event per asset and partition when
        # it creates a range run (measured: ~50 ms a day on SQLite, ~100 ms on PostgreSQL),
        # so the wait grows with the period; a launch that still times out is found by its
        # key's tag (`find`), never launched twice.
        days = (request.period_to - request.period_from).days + 1
        try:
            return self._client(self.timeout + SECONDS_PER_DAY * days).submit_job_execution(
                self.job_name,
                repository_location_name=self.location_name,
                run_config=run_config(request),
                tags=run_tags(request),
            )
        except DagsterGraphQLClientError as exc:
            reason = _reason(exc, self.webserver_url)
            raise LaunchError(mask_text(f"Dagster did not launch the run: {reason}")) from exc

    def status(self, run_id: str) -> RunState | None:
        return run_state(self.instance(), run_id, self.job_name)

    def find(self, idempotency_key: str) -> str | None:
        runs = self.instance().get_run_ids(
            RunsFilter(job_name=self.job_name, tags={IDEMPOTENCY_TAG: idempotency_key}), limit=1
        )
        return runs[0] if runs else None
