"""Every environment variable the project reads, validated in one place.

`load_settings()` reads them all and checks each before any work starts: a bad value is one
line naming the variable and what it accepts (`SettingsError`). Secrets are never kept
here: a `Secret` says whether its variable is set, and the Dagster layer passes it on as
`dg.EnvVar(name)`, so Dagster resolves it at run time and never records its value. The
README's configuration table lists exactly `VARIABLES` (a test holds them together).

Nothing here imports the Dagster layer.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

T = TypeVar("T")
TRUE_VALUES = frozenset({"1", "true", "yes", "on"})
FALSE_VALUES = frozenset({"0", "false", "no", "off"})
STORAGE_BACKENDS = ("local", "s3")
SSE_MODES = ("AES256", "aws:kms")
MAX_CONCURRENCY = 100
# An account's STT limit across all runs (OpenAI's whisper-1 tiers allow hundreds of requests
# a minute); one row per slot in the ledger database, so the bound keeps the table small.
MAX_STT_IN_FLIGHT = 1000
MAX_BACKFILL_RUN_DAYS = 3660  # ten years of days per run: past that, one run is meant
DEFAULT_PARTITION_DAYS = 90  # the first partition: this many days before today
# The registry CSV's decimal mark, by the spreadsheets that open it: comma for Russian (and
# most European) Excel and LibreOffice, point for English ones.
DECIMAL_MARKS = {"comma": ",", "point": "."}
# The language of what people read: the report and the transcript headers (report/labels.py,
# transcripts/file_format.py LABELS).
LANGUAGES = ("ru", "en")
ROLE_MODES = ("energy", "turns", "per_channel", "none")  # transcripts.dialogue.ROLE_MODES
SEND_MODES = ("speech", "all")  # transcripts.speech_only.SEND_MODES
# Models that answer json only (no times): clients/stt_models.py, docs/specs/stt_wire.md §1.4.
JSON_ONLY_MODELS = frozenset({
    "gpt-4o-transcribe", "gpt-4o-mini-transcribe", "gpt-4o-mini-transcribe-2025-12-15",
    "gpt-4o-mini-transcribe-2025-03-20", "gpt-transcribe",
})  # fmt: skip
MIN_REQUEST_SEC = 30.0  # pieces are cut in pauses up to 5 s before their limit
# What an API token may do (README, "API tokens"): launch exports and read their own runs;
# read any run and its files' addresses; scrape the metrics.
API_SCOPES = ("export:run", "export:read", "metrics:read")
MAX_TOKEN_AGE_DAYS = 3650
_TOKEN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
# Never reachable through a trusted network: loopback, and link-local (the cloud metadata
# service at 169.254.169.254 is the classic target of a forged recording link).
_NEVER_TRUSTED = tuple(
    ipaddress.ip_network(n) for n in ("127.0.0.0/8", "169.254.0.0/16", "::1/128", "fe80::/10")
)
# Models that take `keywords[]` (clients/stt_models.py, docs/specs/openai_models.md §3); a
# keyword is a single-line literal without `<` or `>`, else the whole request is refused.
KEYWORD_MODELS = frozenset({"gpt-transcribe"})
_BAD_KEYWORD = re.compile(r"[<>\r\n]")
# OpenAI's list prices per minute (clients/stt_models.py's `price_per_minute_usd`, the one
# table: a test holds the two equal). Another model's tariff must be set: a compatible
# server's bill is its own, the gpt-4o family's is by tokens (docs/specs/stt_wire.md §3.4).
LIST_PRICES_PER_MINUTE = {"whisper-1": 0.006, "gpt-transcribe": 0.0045}
# How the STT bills a request: the model's own unit (clients/stt_models.py), or per second /
# per started minute for a compatible server's bill.
BILLING_UNIT_SETTINGS = ("model", "second", "minute")
# The order the calls of a run go to download and the STT (state/schedule.CALL_ORDERS).
CALL_ORDERS = ("longest_first", "day")


class SettingsError(ValueError):
    """One or more settings are invalid; each line names a variable and what it accepts."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Secret:
    """A secret variable: whether it is set, never its value."""

    name: str
    is_set: bool

    def __bool__(self) -> bool:
        return self.is_set


@dataclass(frozen=True)
class ApiToken:
    """One API token as configured: its name, the SHA-256 of its secret (never the secret
    itself), its scopes and the day it was created (None: not said)."""

    name: str
    sha256: str  # lower-case hex
    scopes: frozenset[str]
    created: date | None = None


@dataclass(frozen=True)
class Settings:
    # Bitrix24
    bitrix24_webhook_url: Secret
    bitrix24_oauth_token: Secret
    bitrix24_portal_url: str
    bitrix24_oauth_refresh_token: Secret
    bitrix24_client_id: str
    bitrix24_client_secret: Secret
    bitrix24_oauth_server: str
    bitrix24_requests_per_second: float
    bitrix24_shared_pacing: bool  # the rate is shared by every run (through the ledger db)
    # Drive downloads (the portal's /rest/ path) wait for the rate too: whether the portal
    # meters them is undocumented (docs/specs/bitrix24_downloads.md), so on by default
    bitrix24_pace_downloads: bool
    # recording downloads
    recording_hosts: tuple[str, ...]
    # private networks (CIDR) trusted for recordings, e.g. the PBX's 10.20.0.0/16
    recording_networks: tuple[str, ...]
    max_recording_mb: float
    download_deadline_sec: float
    # OpenAI-compatible services
    openai_api_key: Secret
    openai_base_url: str
    chatgpt_proxy_url: Secret
    whisper_model: str
    whisper_language: str
    whisper_keywords: tuple[str, ...]
    # the second opinion for doubtful calls (transcripts/second_opinion.py); "" none
    whisper_fallback_model: str
    whisper_fallback_base_url: str  # "" the same server as WHISPER_MODEL's
    whisper_fallback_api_key: Secret  # sent to WHISPER_FALLBACK_BASE_URL instead of OpenAI's
    # its tariff: the model's list price when 0 (a model without one needs it set)
    whisper_fallback_price_per_minute_usd: float
    stt_role_mode: str
    stt_send: str  # "speech": only what the VAD calls speech goes to the STT; "all": the call
    stt_max_upload_mb: float
    stt_max_request_sec: float
    stt_billing_unit: str  # "model": the model's own (clients/stt_models.billing_unit)
    summary_model: str
    summaries_enabled: bool
    # where things live
    home: Path
    database_url: Secret  # CALLTEXTS_DATABASE_URL; unset: the SQLite file under home
    storage_backend: str
    s3_bucket: str
    s3_prefix: str
    s3_sse: str
    s3_kms_key_id: str
    s3_endpoint_url: str
    aws_region: str
    # the export
    timezone: str
    partitions_start: date
    concurrency: int
    call_order: str  # "longest_first" (the STT's slots busy to the end) or "day"
    stt_max_in_flight: int  # across all runs of the instance; 0: only `concurrency` per run
    backfill_run_days: int  # days per run of a backfill; 0: the whole range is one run
    price_per_minute_usd: float
    usd_rub_rate: float
    budget_usd: float
    csv_decimal_mark: str  # "," or "."
    language: str  # "ru" or "en": the report and the transcript headers
    mask_phones_in_transcripts: bool
    verify_checksums: bool
    retry_scale: float
    sandbox: bool
    # operations
    dagster_home: str  # DAGSTER_HOME as given ("" unset): the instance `calltexts run` uses
    dagster_webserver_url: str
    dagster_code_location: str
    schedules_running: bool
    pushgateway_url: Secret
    # the API's tokens (CALLTEXTS_API_TOKENS or the file CALLTEXTS_API_TOKENS_FILE); none:
    # the API serves loopback only
    api_tokens: tuple[ApiToken, ...]
    api_token_max_age_days: int  # older tokens are due for rotation (warned, on /metrics)
    _env: Mapping[str, str] = field(repr=False, compare=False, default_factory=dict)

    @property
    def credentials_configured(self) -> bool:
        return bool(
            self.bitrix24_webhook_url
            or self.bitrix24_oauth_token
            or self.bitrix24_oauth_refresh_token
        )

    @property
    def sqlite_url(self) -> str:
        return f"sqlite:///{self.home / 'ledger.sqlite'}"

    def secret_value(self, secret: Secret) -> str:
        """The secret itself, for code outside a Dagster run (CLI, API); inside one, a
        resource gets `dg.EnvVar(secret.name)` instead and Dagster resolves it."""
        return self._env.get(secret.name, "") if secret else ""

    def child_environment(self, **extra: str) -> dict[str, str]:
        """The environment for a program this one starts (pg_dump), with `extra` set."""
        return {**self._env, **extra}

    def ledger_url(self) -> str:
        return self.secret_value(self.database_url) or self.sqlite_url

    def pushgateway(self) -> str:
        return self.secret_value(self.pushgateway_url)

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def work_dir(self) -> Path:
        return self.home / "tmp"


class _Reader:
    """Reads variables, collecting one problem line per bad one."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []
        self.names: list[str] = []

    def _raw(self, name: str) -> str | None:
        self.names.append(name)
        value = self.env.get(name)
        return None if value is None or value.strip() == "" else value.strip()

    def _parsed(self, name: str, default: T, parse: Callable[[str], T], accepted: str) -> T:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            return parse(raw)
        except (ValueError, TypeError):
            self.problems.append(f"{name}={raw[:60]!r}: expected {accepted}")
            return default

    def text(self, name: str, default: str = "") -> str:
        raw = self._raw(name)
        return default if raw is None else raw

    def secret(self, name: str, check: Callable[[str], None] | None = None) -> Secret:
        raw = self._raw(name)
        if raw is not None and check is not None:
            try:
                check(raw)
            except ValueError as exc:  # the message must not quote the secret
                self.problems.append(f"{name}: {exc}")
        return Secret(name, raw is not None)

    def flag(self, name: str, default: bool = False) -> bool:
        def parse(raw: str) -> bool:
            lowered = raw.lower()
            if lowered not in TRUE_VALUES | FALSE_VALUES:
                raise ValueError(raw)
            return lowered in TRUE_VALUES

        return self._parsed(name, default, parse, "true or false (1/0, yes/no, on/off)")

    def number(
        self, name: str, default: float, *, minimum: float = 0.0, above: bool = False
    ) -> float:
        bound = f"> {minimum:g}" if above else f">= {minimum:g}"

        def parse(raw: str) -> float:
            value = float(raw)
            if not math.isfinite(value) or value < minimum or (above and value == minimum):
                raise ValueError(raw)
            return value

        return self._parsed(name, default, parse, f"a number {bound}")

    def integer(self, name: str, default: int, *, minimum: int, maximum: int) -> int:
        def parse(raw: str) -> int:
            value = int(raw)
            if not minimum <= value <= maximum:
                raise ValueError(raw)
            return value

        return self._parsed(name, default, parse, f"a whole number from {minimum} to {maximum}")

    def choice(self, name: str, default: str, options: tuple[str, ...]) -> str:
        def parse(raw: str) -> str:
            if raw not in options:
                raise ValueError(raw)
            return raw

        return self._parsed(name, default, parse, "one of " + ", ".join(options))

    def keywords(self, name: str) -> tuple[str, ...]:
        def parse(raw: str) -> tuple[str, ...]:
            words = tuple(w.strip() for w in raw.split(","))
            if any(not w or _BAD_KEYWORD.search(w) for w in words):
                raise ValueError(raw)
            return words

        accepted = "comma-separated literal terms, none empty, none with '<', '>' or a line break"
        return self._parsed(name, (), parse, accepted)

    def url(self, name: str, default: str = "") -> str:
        return self._parsed(name, default, _checked_url, "an http(s) URL")

    def hosts(self, name: str, default: str) -> tuple[str, ...]:
        def parse(raw: str) -> tuple[str, ...]:
            hosts = tuple(h.strip().lower() for h in raw.split(",") if h.strip())
            if not all(_HOST.fullmatch(h) for h in hosts):
                raise ValueError(raw)
            return hosts

        return self._parsed(
            name,
            parse(default),
            parse,
            "host names separated by commas; .example.com also allows its subdomains",
        )

    def networks(self, name: str) -> tuple[str, ...]:
        raw = self._raw(name)
        if raw is None:
            return ()
        networks = []
        for item in (part.strip() for part in raw.split(",")):
            if not item:
                continue
            try:
                network = ipaddress.ip_network(item, strict=False)
            except ValueError:
                self.problems.append(
                    f"{name}: {item[:60]!r} is not a network; expected CIDR blocks separated "
                    "by commas, e.g. 10.20.0.0/16,192.168.5.10/32"
                )
                continue
            if any(network.overlaps(never) for never in _NEVER_TRUSTED):
                self.problems.append(
                    f"{name}: {network} overlaps loopback or link-local addresses, which "
                    "recordings may never come from; name the PBX's own network"
                )
                continue
            networks.append(str(network))
        return tuple(networks)

    def api_tokens(self, name: str, file_name: str) -> tuple[ApiToken, ...]:
        """Token lines `name:sha256-hex:scope,scope[:YYYY-MM-DD]` from the variable or the
        mounted file; problems name the source and the line, never quote it."""
        inline, path = self._raw(name), self._raw(file_name)
        if inline is not None and path is not None:
            self.problems.append(f"{name}, {file_name}: set one of them, not both")
            return ()
        if path is not None:
            try:
                text = Path(path).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                reason = getattr(exc, "strerror", None) or type(exc).__name__
                self.problems.append(f"{file_name}={path}: cannot read the token file ({reason})")
                return ()
            source = f"{file_name}={path}"
        elif inline is not None:
            # one variable, so entries may also be separated by `;` (a .env file is one line)
            text, source = inline.replace(";", "\n"), name
        else:
            return ()
        tokens: list[ApiToken] = []
        for number, line in enumerate(text.splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                token = parse_token_line(line)
            except ValueError as exc:
                self.problems.append(f"{source} line {number}: {exc}")
                continue
            if any(t.name == token.name for t in tokens):
                self.problems.append(f"{source} line {number}: token name {token.name} repeated")
                continue
            tokens.append(token)
        return tuple(tokens)

    def zone(self, name: str, default: str) -> str:
        def parse(raw: str) -> str:
            try:
                ZoneInfo(raw)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(raw) from exc
            return raw

        return self._parsed(name, default, parse, "an IANA time zone such as Europe/Moscow")

    def first_day(self, name: str, default_days: int) -> date:
        """A date, or a whole number of days before today: the first day a rolling window
        (recordings kept N days) covers, counted when the settings are read."""

        def parse(raw: str) -> date:
            if raw.isdigit():
                days = int(raw)
                if not 1 <= days <= MAX_BACKFILL_RUN_DAYS:
                    raise ValueError(raw)
                return date.today() - timedelta(days=days)
            return date.fromisoformat(raw)

        return self._parsed(
            name,
            parse(str(default_days)),
            parse,
            f"a date YYYY-MM-DD, or a number of days before today (1 to {MAX_BACKFILL_RUN_DAYS})",
        )


_HOST = re.compile(r"\.?[a-z0-9]([a-z0-9\-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9\-]*[a-z0-9])?)*")
# Where Bitrix24's own telephony keeps recordings (CALL_RECORD_URL of Voximplant calls:
# storage-gw-ru-02.voximplant.com, storage-gw-com-02.voximplant.com; docs/specs §2).
DEFAULT_RECORDING_HOSTS = ".voximplant.com"


def _checked_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(raw)
    return raw.rstrip("/")


_WEBHOOK_SHAPE = "expected https://<portal>/rest/<user id>/<code>/ (code: letters and digits)"


def _webhook_shape(raw: str) -> None:
    parts = urlsplit(raw)
    segments = parts.path.split("/")[1:]
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
        raise ValueError(_WEBHOOK_SHAPE)
    if len(segments) < 3 or segments[0] != "rest" or not segments[1].isdigit():
        raise ValueError(_WEBHOOK_SHAPE)
    if not segments[2].isascii() or not segments[2].isalnum():
        raise ValueError(_WEBHOOK_SHAPE)


_TOKEN_LINE = (
    "expected name:sha256-hex-of-token:scope1,scope2[:YYYY-MM-DD] "
    f"(scopes: {', '.join(API_SCOPES)}; `calltexts api token create` prints one)"
)


def parse_token_line(line: str) -> ApiToken:
    """One token line, checked; ValueError says what is wrong without quoting it. Scopes hold
    a colon themselves (`export:run`): a last field with a digit in it is the day."""
    name, has_hash, rest = line.partition(":")
    digest, has_scopes, scopes = rest.partition(":")
    if not (has_hash and has_scopes):
        raise ValueError(_TOKEN_LINE)
    name, digest = name.strip(), digest.strip()
    if not _TOKEN_NAME.fullmatch(name):
        raise ValueError("a token name is 1-64 letters, digits and _.@- " + f"({_TOKEN_LINE})")
    if not _SHA256_HEX.fullmatch(digest):
        raise ValueError("the second field must be the token's SHA-256, 64 hex digits")
    created = None
    head, _, last = scopes.rpartition(":")
    if head and any(c.isdigit() for c in last):
        scopes = head
        try:
            created = date.fromisoformat(last.strip().removeprefix("created").strip())
        except ValueError:
            raise ValueError("the last field is the day it was created, YYYY-MM-DD") from None
    granted = {s.strip() for s in scopes.split(",") if s.strip()}
    if not granted or granted - set(API_SCOPES):
        raise ValueError(f"scopes must be some of {', '.join(API_SCOPES)}")
    return ApiToken(name, digest.lower(), frozenset(granted), created)


def _database_shape(raw: str) -> None:
    if not raw.startswith(("sqlite:", "postgresql")):
        raise ValueError("expected sqlite:///<file> or postgresql+psycopg2://<user>@<host>/<db>")


def _proxy_shape(raw: str) -> None:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https", "socks5", "socks5h") or not parts.hostname:
        raise ValueError("expected http://[user:password@]host:port")


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Every setting from `env` (default: the process environment), validated; raises
    `SettingsError` listing each bad variable."""
    reader = _Reader(os.environ if env is None else env)
    settings = _read(reader)
    if reader.problems:
        raise SettingsError(reader.problems)
    return settings


def _read(r: _Reader) -> Settings:
    settings = Settings(
        bitrix24_webhook_url=r.secret("BITRIX24_WEBHOOK_URL", _webhook_shape),
        bitrix24_oauth_token=r.secret("BITRIX24_OAUTH_TOKEN"),
        bitrix24_portal_url=r.url("BITRIX24_PORTAL_URL"),
        bitrix24_oauth_refresh_token=r.secret("BITRIX24_OAUTH_REFRESH_TOKEN"),
        bitrix24_client_id=r.text("BITRIX24_CLIENT_ID"),
        bitrix24_client_secret=r.secret("BITRIX24_CLIENT_SECRET"),
        bitrix24_oauth_server=r.url("BITRIX24_OAUTH_SERVER", "https://oauth.bitrix.info"),
        bitrix24_requests_per_second=r.number("BITRIX24_REQUESTS_PER_SECOND", 2.0, above=True),
        bitrix24_shared_pacing=r.flag("BITRIX24_SHARED_PACING", True),
        bitrix24_pace_downloads=r.flag("BITRIX24_PACE_DOWNLOADS", True),
        recording_hosts=r.hosts("CALLTEXTS_RECORDING_HOSTS", DEFAULT_RECORDING_HOSTS),
        recording_networks=r.networks("CALLTEXTS_RECORDING_NETWORKS"),
        max_recording_mb=r.number("CALLTEXTS_MAX_RECORDING_MB", 1024.0, above=True),
        download_deadline_sec=r.number("CALLTEXTS_DOWNLOAD_DEADLINE_SEC", 600.0, above=True),
        openai_api_key=r.secret("OPENAI_API_KEY"),
        openai_base_url=r.url("OPENAI_BASE_URL", "https://api.openai.com/v1"),
        chatgpt_proxy_url=r.secret("CHATGPT_PROXY_URL", _proxy_shape),
        whisper_model=r.text("WHISPER_MODEL", "gpt-transcribe"),
        whisper_language=r.text("WHISPER_LANGUAGE"),
        whisper_keywords=r.keywords("WHISPER_KEYWORDS"),
        whisper_fallback_model=r.text("WHISPER_FALLBACK_MODEL"),
        whisper_fallback_base_url=r.url("WHISPER_FALLBACK_BASE_URL"),
        whisper_fallback_api_key=r.secret("WHISPER_FALLBACK_API_KEY"),
        whisper_fallback_price_per_minute_usd=r.number(
            "WHISPER_FALLBACK_PRICE_PER_MINUTE_USD", 0.0
        ),
        stt_role_mode=r.choice("STT_ROLE_MODE", "", ROLE_MODES),
        stt_send=r.choice("STT_SEND", "speech", SEND_MODES),
        stt_max_upload_mb=r.number("STT_MAX_UPLOAD_MB", 0.0),
        stt_max_request_sec=r.number("STT_MAX_REQUEST_SEC", 0.0),
        stt_billing_unit=r.choice("STT_BILLING_UNIT", "model", BILLING_UNIT_SETTINGS),
        summary_model=r.text("SUMMARY_MODEL", "gpt-6-luna"),
        summaries_enabled=r.flag("EXPORT_SUMMARY_ENABLED"),
        home=Path(r.text("CALLTEXTS_HOME", "var")).resolve(),
        database_url=r.secret("CALLTEXTS_DATABASE_URL", _database_shape),
        storage_backend=r.choice("CALLTEXTS_STORAGE", "local", STORAGE_BACKENDS),
        s3_bucket=r.text("CALLTEXTS_S3_BUCKET"),
        s3_prefix=r.text("CALLTEXTS_S3_PREFIX"),
        s3_sse=r.choice("CALLTEXTS_S3_SSE", "AES256", SSE_MODES),
        s3_kms_key_id=r.text("CALLTEXTS_S3_KMS_KEY_ID"),
        s3_endpoint_url=r.url("CALLTEXTS_S3_ENDPOINT_URL"),
        aws_region=r.text("AWS_REGION") or r.text("AWS_DEFAULT_REGION"),
        timezone=r.zone("CALLTEXTS_TIMEZONE", "Europe/Moscow"),
        # Recordings are kept 90 days (the requirements; Voximplant's shortest retention, docs/
        # specs/bitrix24_wire.md §2): older days cannot be exported, so the UI's partitions
        # (and their fill) start there unless a date is set.
        partitions_start=r.first_day("CALLTEXTS_PARTITIONS_START", DEFAULT_PARTITION_DAYS),
        concurrency=r.integer("CALLTEXTS_CONCURRENCY", 10, minimum=1, maximum=MAX_CONCURRENCY),
        call_order=r.choice("CALLTEXTS_CALL_ORDER", "longest_first", CALL_ORDERS),
        stt_max_in_flight=r.integer(
            "CALLTEXTS_STT_MAX_IN_FLIGHT", 0, minimum=0, maximum=MAX_STT_IN_FLIGHT
        ),
        backfill_run_days=r.integer(
            "CALLTEXTS_BACKFILL_RUN_DAYS", 0, minimum=0, maximum=MAX_BACKFILL_RUN_DAYS
        ),
        price_per_minute_usd=r.number("STT_PRICE_PER_MINUTE_USD", 0.0),
        usd_rub_rate=r.number("USD_RUB_RATE", 100.0, above=True),
        budget_usd=r.number("CALLTEXTS_BUDGET_USD", 0.0),
        csv_decimal_mark=DECIMAL_MARKS[
            r.choice("CALLTEXTS_CSV_DECIMAL_MARK", "comma", tuple(DECIMAL_MARKS))
        ],
        language=r.choice("CALLTEXTS_LANGUAGE", "ru", LANGUAGES),
        mask_phones_in_transcripts=r.flag("TRANSCRIPT_MASK_PHONES"),
        verify_checksums=r.flag("CALLTEXTS_VERIFY_CHECKSUMS"),
        retry_scale=r.number("CALLTEXTS_RETRY_SCALE", 1.0),
        sandbox=r.flag("CALLTEXTS_SANDBOX"),
        dagster_home=r.text("DAGSTER_HOME"),
        dagster_webserver_url=r.url("DAGSTER_WEBSERVER_URL", "http://127.0.0.1:3000"),
        dagster_code_location=r.text("DAGSTER_CODE_LOCATION"),
        schedules_running=r.flag("CALLTEXTS_SCHEDULES_RUNNING"),
        pushgateway_url=r.secret("PROMETHEUS_PUSHGATEWAY_URL", _proxy_shape),
        api_tokens=r.api_tokens("CALLTEXTS_API_TOKENS", "CALLTEXTS_API_TOKENS_FILE"),
        api_token_max_age_days=r.integer(
            "CALLTEXTS_API_TOKEN_MAX_AGE_DAYS", 90, minimum=1, maximum=MAX_TOKEN_AGE_DAYS
        ),
        _env=dict(r.env),
    )
    if settings.storage_backend == "s3" and not settings.s3_bucket:
        r.problems.append("CALLTEXTS_S3_BUCKET: required when CALLTEXTS_STORAGE=s3")
    oauth = settings.bitrix24_oauth_token or settings.bitrix24_oauth_refresh_token
    if oauth and not settings.bitrix24_portal_url:
        r.problems.append("BITRIX24_PORTAL_URL: required with an OAuth token")
    if settings.bitrix24_oauth_refresh_token:
        if not settings.bitrix24_client_id:
            r.problems.append("BITRIX24_CLIENT_ID: required with BITRIX24_OAUTH_REFRESH_TOKEN")
        if not settings.bitrix24_client_secret:
            r.problems.append("BITRIX24_CLIENT_SECRET: required with BITRIX24_OAUTH_REFRESH_TOKEN")
    settings = _resolved_defaults(settings)
    if settings.whisper_keywords and settings.whisper_model not in KEYWORD_MODELS:
        r.problems.append(
            f"WHISPER_KEYWORDS: WHISPER_MODEL={settings.whisper_model} takes no keywords "
            f"(only {', '.join(sorted(KEYWORD_MODELS))}); unset it or change the model"
        )
    if settings.stt_role_mode == "energy" and settings.whisper_model in JSON_ONLY_MODELS:
        r.problems.append(
            f"STT_ROLE_MODE=energy needs word or segment times, which WHISPER_MODEL="
            f"{settings.whisper_model} does not return: use turns (each side's turns sent on "
            "their own), per_channel (each side whole, twice the cost) or none"
        )
    r.problems.extend(_fallback_problems(settings))
    r.problems.extend(_tariff_problems(settings))
    if 0 < settings.stt_max_request_sec < MIN_REQUEST_SEC:
        r.problems.append(
            f"STT_MAX_REQUEST_SEC: expected 0 (the model's limit) or >= {MIN_REQUEST_SEC}"
        )
    return settings


def _fallback_problems(settings: Settings) -> list[str]:
    """WHISPER_FALLBACK_*: a second model that can answer what the first one is asked."""
    model = settings.whisper_fallback_model
    if not model:
        return [
            f"{name}: set only with WHISPER_FALLBACK_MODEL (the second opinion's model)"
            for name, value in (
                ("WHISPER_FALLBACK_BASE_URL", settings.whisper_fallback_base_url),
                ("WHISPER_FALLBACK_API_KEY", settings.whisper_fallback_api_key),
                (
                    "WHISPER_FALLBACK_PRICE_PER_MINUTE_USD",
                    settings.whisper_fallback_price_per_minute_usd,
                ),
            )
            if value
        ]
    same_server = settings.whisper_fallback_base_url in ("", settings.openai_base_url)
    if model == settings.whisper_model and same_server:
        return [
            f"WHISPER_FALLBACK_MODEL={model} is WHISPER_MODEL on the same server, which would "
            "answer the same: name another model, or set WHISPER_FALLBACK_BASE_URL"
        ]
    if settings.stt_role_mode == "energy" and model in JSON_ONLY_MODELS:
        return [
            f"WHISPER_FALLBACK_MODEL={model} returns no word times, which STT_ROLE_MODE=energy "
            "needs for the roles: choose a model with times (whisper-1, a compatible "
            "server's) or STT_ROLE_MODE=turns"
        ]
    return []


def _tariff_problems(settings: Settings) -> list[str]:
    """Each model that will be sent audio has a tariff: its list price or one set. A model
    without a list price (a compatible server's, the gpt-4o family billed by tokens) is never
    priced as another: one line before any work says which setting to give."""
    found = []
    for model_setting, price_setting, model, price in (
        ("WHISPER_MODEL", "STT_PRICE_PER_MINUTE_USD", settings.whisper_model,
         settings.price_per_minute_usd),
        ("WHISPER_FALLBACK_MODEL", "WHISPER_FALLBACK_PRICE_PER_MINUTE_USD",
         settings.whisper_fallback_model, settings.whisper_fallback_price_per_minute_usd),
    ):  # fmt: skip
        if model and not price:
            found.append(
                f"{price_setting}: {model_setting}={model} has no list price known to "
                f"calltexts (only {', '.join(sorted(LIST_PRICES_PER_MINUTE))}): set its "
                "tariff in USD per minute of audio (e.g. 0.006)"
            )
    return found


def _resolved_defaults(settings: Settings) -> Settings:
    """Defaults that depend on the model: the role method (one pass with word times where
    the model gives them, else each side's turns) and the tariffs (each model's list price;
    0 where it has none, which `_tariff_problems` reports)."""
    timed = settings.whisper_model not in JSON_ONLY_MODELS
    role_mode = settings.stt_role_mode or ("energy" if timed else "turns")
    price = settings.price_per_minute_usd or LIST_PRICES_PER_MINUTE.get(settings.whisper_model, 0.0)
    fallback_price = settings.whisper_fallback_price_per_minute_usd or (
        LIST_PRICES_PER_MINUTE.get(settings.whisper_fallback_model, 0.0)
    )
    return replace(
        settings,
        stt_role_mode=role_mode,
        price_per_minute_usd=price,
        whisper_fallback_price_per_minute_usd=fallback_price,
    )


def _names_read() -> tuple[str, ...]:
    reader = _Reader({})
    _read(reader)
    return tuple(dict.fromkeys(reader.names))


# Every variable a load reads, in order: what the README's configuration table lists.
VARIABLES = _names_read()


def portal_today(tz: str | None = None) -> date:
    return datetime.now(ZoneInfo(tz or load_settings().timezone)).date()


# Dagster reads these from the environment of the process that creates a run (the webserver,
# the daemon, `calltexts run`) and of the run worker, not from dagster.yaml. For a range run
# (a 60-day backfill is one run) they make Dagster record one "materialization planned"
# event per asset instead of one per asset and partition (7 instead of 420: each is a
# database write), and write a range's materialization events in batches where the event
# storage can (PostgreSQL). The cost: a failed range run leaves its partitions "missing",
# not "failed", in the UI; the ledger still records every call's failure.
DAGSTER_ENVIRONMENT = {
    "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "true",
    "DAGSTER_EVENT_BATCH_SIZE": "100",
}


def apply_dagster_environment(env: MutableMapping[str, str] | None = None) -> None:
    """Set DAGSTER_ENVIRONMENT where the deployment has not set the variables itself."""
    target = os.environ if env is None else env
    for name, value in DAGSTER_ENVIRONMENT.items():
        target.setdefault(name, value)
