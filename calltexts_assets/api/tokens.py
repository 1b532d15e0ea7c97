"""Who may call the API: bearer tokens (RFC 6750) with scopes.

Tokens are configured as lines `name:sha256-hex:scopes[:YYYY-MM-DD]` (settings.py reads and
checks them): only the SHA-256 of each secret is known here. A presented token is hashed and
compared with every configured hash in constant time, so neither the answer nor its timing
tells which part of a guess was right. Secrets are never logged: only a token's name is.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date

from fastapi import Request, Response
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from calltexts_assets.runlog.log import scrubbed_logger
from calltexts_assets.settings import ApiToken, parse_token_line

log = scrubbed_logger(__name__)

EXPORT_RUN = "export:run"  # launch an export, read the runs it launched
EXPORT_READ = "export:read"  # read any run, with its files' addresses
METRICS_READ = "metrics:read"
REALM = 'Bearer realm="calltexts"'
SECRET_PREFIX = "ctk_"  # recognisable in a leaked config or a secret scanner
# Idempotency keys of different tokens live apart: a key is stored as this UUID of
# (token name, key), so one client's key never replays another's run.
_KEY_SPACE = uuid.UUID("6f1d7f64-54c5-4b8e-9a43-6b2f3f0f3c25")


@dataclass(frozen=True)
class Caller:
    name: str
    scopes: frozenset[str]

    def may(self, scope: str) -> bool:
        return scope in self.scopes


ANONYMOUS = Caller("anonymous", frozenset({EXPORT_RUN, EXPORT_READ, METRICS_READ}))


def token_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_token(name: str, scopes: Sequence[str], today: date) -> tuple[str, str]:
    """A fresh secret and the configuration line that grants it `scopes` (checked as
    settings.py checks every line); the secret exists nowhere else."""
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    line = f"{name}:{token_digest(secret)}:{','.join(sorted(set(scopes)))}:{today.isoformat()}"
    parse_token_line(line)
    return secret, line


def scoped_key(caller: Caller, key: str) -> str:
    """The idempotency key as stored: the client's own UUID without tokens (loopback)."""
    if caller is ANONYMOUS:
        return key
    return str(uuid.uuid5(_KEY_SPACE, f"{caller.name}\n{key}"))


def denied(status: int, error: str | None = None, scope: str | None = None) -> Response:
    challenge = REALM
    if error:
        challenge += f', error="{error}"'
    if scope:
        challenge += f', scope="{scope}"'
    detail = {
        None: "a bearer token is required (Authorization: Bearer <token>)",
        "invalid_token": "the bearer token is not known (revoked, mistyped or never issued)",
        "insufficient_scope": f"the token lacks the scope {scope}",
    }[error]
    return Response(
        content=f'{{"detail":"{detail}"}}',
        status_code=status,
        media_type="application/json",
        headers={"WWW-Authenticate": challenge},
    )


class TokenCheck:
    """The configured tokens; `caller` answers who presented a request's token."""

    def __init__(self, tokens: Sequence[ApiToken]) -> None:
        self.tokens = tuple(tokens)

    def caller(self, request: Request) -> Caller | Response:
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            return denied(401)
        digest = token_digest(credentials.strip())
        found = None
        for token in self.tokens:  # every hash compared: the time does not depend on which
            if hmac.compare_digest(digest, token.sha256):
                found = token
        if found is None:
            return denied(401, "invalid_token")
        return Caller(found.name, found.scopes)


def require(caller: Caller | Response, scope: str) -> Caller | Response:
    if isinstance(caller, Response) or caller.may(scope):
        return caller
    return denied(403, "insufficient_scope", scope)


def token_ages(tokens: Sequence[ApiToken], today: date) -> dict[str, int | None]:
    """Each token's age in days (None: its line says no creation day)."""
    return {t.name: None if t.created is None else (today - t.created).days for t in tokens}


def rotation_warnings(tokens: Sequence[ApiToken], today: date, max_age_days: int) -> list[str]:
    lines = []
    for name, age in token_ages(tokens, today).items():
        if age is None:
            lines.append(
                f"API token {name} has no creation day: its age is unknown; rotate it "
                "(`calltexts api token create`) so its line carries one"
            )
        elif age > max_age_days:
            lines.append(
                f"API token {name} is {age} days old (CALLTEXTS_API_TOKEN_MAX_AGE_DAYS="
                f"{max_age_days}): rotate it"
            )
    return lines


class TokenAgeCollector(Collector):
    """`calltexts_api_token_age_days` and `calltexts_api_token_rotation_due` per token name;
    a due token is also warned about in the log, once a day."""

    def __init__(
        self, tokens: Sequence[ApiToken], max_age_days: int, today: Callable[[], date]
    ) -> None:
        self.tokens, self.max_age_days, self.today = tuple(tokens), max_age_days, today
        self._warned: date | None = None

    def describe(self) -> list[Metric]:
        return []

    def warn_once_a_day(self) -> None:
        today = self.today()
        if self._warned != today:
            self._warned = today
            for line in rotation_warnings(self.tokens, today, self.max_age_days):
                log.warning(line)

    def collect(self) -> Iterator[Metric]:
        self.warn_once_a_day()
        today = self.today()
        age = GaugeMetricFamily(
            "calltexts_api_token_age_days",
            "Days since the API token was created (-1: its line says no day)",
            labels=["token"],
        )
        due = GaugeMetricFamily(
            "calltexts_api_token_rotation_due",
            "1 when the API token is older than CALLTEXTS_API_TOKEN_MAX_AGE_DAYS or undated",
            labels=["token"],
        )
        for name, days in token_ages(self.tokens, today).items():
            age.add_metric([name], -1 if days is None else days)
            due.add_metric([name], 1 if days is None or days > self.max_age_days else 0)
        yield from (age, due)
