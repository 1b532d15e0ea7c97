"""Start both emulators together, and point the project's environment at them."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette

from calltexts_sandbox.calls.seed import SeedSpec
from calltexts_sandbox.portal.app import create_portal_app, create_storage_app, portal_of
from calltexts_sandbox.portal.files import CONTENTS, SPEECH, TONES
from calltexts_sandbox.portal.state import Portal, PortalConfig
from calltexts_sandbox.server import RunningServer, serve_in_thread
from calltexts_sandbox.stt.app import SttEmulator

SANDBOX_API_KEY = "sk-sandbox-key"
# The storage host of the recording links is another host name than the portal's (as
# Voximplant's gateways are), on loopback: the portal answers on 127.0.0.1.
STORAGE_HOST = "localhost"


@dataclass
class Sandbox:
    portal_server: RunningServer
    stt_server: RunningServer
    storage_server: RunningServer
    portal: Portal
    stt: SttEmulator
    config: PortalConfig

    @property
    def portal_url(self) -> str:
        return self.portal_server.url

    @property
    def stt_url(self) -> str:
        return self.stt_server.url

    @property
    def webhook_url(self) -> str:
        return f"{self.portal_url}/rest/{self.config.user_id}/{self.config.webhook_code}/"

    @property
    def storage_url(self) -> str:
        return self.storage_server.url

    def environment(self) -> dict[str, str]:
        """What the resources read to talk to the sandbox instead of real services."""
        return {
            "BITRIX24_WEBHOOK_URL": self.webhook_url,
            "OPENAI_BASE_URL": f"{self.stt_url}/v1",
            "OPENAI_API_KEY": SANDBOX_API_KEY,
            "CALLTEXTS_RECORDING_HOSTS": urlsplit(self.storage_url).hostname or STORAGE_HOST,
            "CALLTEXTS_SANDBOX": "1",
        }

    @staticmethod
    def model_defaults(content: str = TONES) -> dict[str, str]:
        """Settings the sandbox changes only where the user set none: a model that outlives
        2027-02-26 (whisper-1's shutdown: the preflight warns from 60 days before and then
        refuses it, so `make demo` on whisper-1 would stop working; guarded by
        calltexts_tests/sandbox/test_default_models_lifecycle.py). Roles per channel, not the
        product's `turns`: the sandbox's calls are tones, which the turns' voice activity
        detector rightly does not call speech (every transcript would be empty), while each
        channel sent whole is heard by the emulator. It bills each side's channel: twice the
        call, as that mode does anywhere. Sent whole (STT_SEND=all): with `speech` every tone
        call would be `no_speech`. Speech calls (`content="speech"`) are heard as real calls
        are: the product's own role method and STT_SEND stay."""
        if content == SPEECH:
            return {"WHISPER_MODEL": "gpt-transcribe"}
        return {
            "WHISPER_MODEL": "gpt-transcribe",
            "STT_ROLE_MODE": "per_channel",
            "STT_SEND": "all",
        }

    @classmethod
    def defaults_for(cls, environ: Mapping[str, str], content: str = TONES) -> dict[str, str]:
        """`model_defaults` less what the user set; a model the user chose keeps its own
        role method (whisper-1 set alone is `energy`, not the tones' `per_channel`)."""
        defaults = {k: v for k, v in cls.model_defaults(content).items() if not environ.get(k)}
        if environ.get("WHISPER_MODEL"):
            defaults.pop("STT_ROLE_MODE", None)
        return defaults

    def oauth_environment(self) -> dict[str, str]:
        """The same with an OAuth application instead of the webhook: a fresh token pair,
        refreshed against the portal's own `/oauth/token/`."""
        access, refresh = self.portal.oauth.issue()
        environment = {k: v for k, v in self.environment().items() if k != "BITRIX24_WEBHOOK_URL"}
        return environment | {
            "BITRIX24_PORTAL_URL": self.portal_url,
            "BITRIX24_OAUTH_TOKEN": access,
            "BITRIX24_OAUTH_REFRESH_TOKEN": refresh,
            "BITRIX24_CLIENT_ID": self.config.client_id,
            "BITRIX24_CLIENT_SECRET": self.config.client_secret,
            "BITRIX24_OAUTH_SERVER": self.portal_url,
        }

    def stop(self) -> None:
        self.portal_server.stop()
        self.stt_server.stop()
        self.storage_server.stop()


def start_sandbox(
    *,
    seed: int,
    start: date,
    days: int,
    calls_per_day: int,
    host: str = "127.0.0.1",
    portal_port: int = 0,
    stt_port: int = 0,
    cache_dir: Path | None = None,
    portal_config: dict[str, Any] | None = None,
    stt_options: dict[str, Any] | None = None,
    public_host: str | None = None,
    storage_port: int = 0,
    content: str = TONES,
) -> Sandbox:
    """Both emulators on `host`; with `public_host` (the name clients reach `host` by) they
    may listen on any address, and the recordings' storage host is `public_host` too.
    `content`: what the calls hold, "tones" or "speech" (calls/content.py); the STT emulator
    hears it."""
    if content not in CONTENTS:
        raise ValueError(f"sandbox content is one of {CONTENTS}, got {content!r}")
    options = {"cache_dir": str(cache_dir) if cache_dir else None, "content": content}
    config = PortalConfig(**(options | (portal_config or {})))
    app = create_portal_app(seed=SeedSpec(seed, start, days, calls_per_day), config=config)
    stt = SttEmulator(api_key=SANDBOX_API_KEY, **({"hearing": content} | (stt_options or {})))
    portal_server, storage_server = serve_portal(app, host, portal_port, public_host, storage_port)
    try:
        stt_server = serve_in_thread(stt.app, host, stt_port, public_host=public_host)
    except Exception:
        portal_server.stop()
        storage_server.stop()
        raise
    return Sandbox(portal_server, stt_server, storage_server, portal_of(app), stt, config)


def serve_portal(
    app: Starlette,
    host: str = "127.0.0.1",
    port: int = 0,
    public_host: str | None = None,
    storage_port: int = 0,
) -> tuple[RunningServer, RunningServer]:
    """The portal app on `host`, and its recordings' storage host on STORAGE_HOST (on
    `host` as `public_host` when that is given)."""
    portal = portal_of(app)
    storage_app = create_storage_app(portal)
    if public_host:
        storage_server = serve_in_thread(storage_app, host, storage_port, public_host=public_host)
    else:
        storage_server = serve_in_thread(storage_app, STORAGE_HOST, storage_port)
    portal.config.storage_url = storage_server.url
    try:
        return serve_in_thread(app, host, port, public_host=public_host), storage_server
    except Exception:
        storage_server.stop()
        raise


def available_content(content: str) -> tuple[str, str]:
    """The content the sandbox can render here, and a line saying why when it differs:
    speech calls need espeak-ng."""
    if content == SPEECH and shutil.which("espeak-ng") is None:
        return TONES, (
            "espeak-ng not found: the SANDBOX calls are tones, not speech "
            "(apt-get install espeak-ng for calls with speech, ring-back and hold music)"
        )
    return content, ""


@contextmanager
def sandbox_environment(**options: Any) -> Iterator[Sandbox]:
    """A running sandbox with os.environ pointed at it; everything restored on exit."""
    sandbox = start_sandbox(**options)
    defaults = sandbox.defaults_for(os.environ, sandbox.config.content)
    applied = sandbox.environment() | defaults
    saved = {name: os.environ.get(name) for name in applied}
    os.environ.update(applied)
    try:
        yield sandbox
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        sandbox.stop()
