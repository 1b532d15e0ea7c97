"""The emulated OAuth side (docs/specs/bitrix24_wire.md §6): access tokens that expire after
`token_lifetime_sec`, and the authorization server's refresh endpoint (`/oauth/token/`)
with single-use refresh tokens and the documented answers and errors."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from calltexts_sandbox.portal.errors import expired_token, invalid_token, no_auth_found


class OAuthServer:
    def __init__(
        self,
        *,
        static_tokens: tuple[str, ...],
        refresh_tokens: tuple[str, ...],
        client_id: str,
        client_secret: str,
        lifetime_sec: float,
        scopes: tuple[str, ...],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.static = set(static_tokens)  # never expire (the tests' plain OAuth token)
        self._refresh = set(refresh_tokens)
        self.client_id, self.client_secret = client_id, client_secret
        self.lifetime_sec, self.scopes, self.clock = lifetime_sec, scopes, clock
        self._expires: dict[str, float] = {}
        self.issued: list[str] = [*static_tokens, *refresh_tokens, client_secret]
        self.refreshes = 0
        self._lock = threading.Lock()

    def issue(self) -> tuple[str, str]:
        """A new (access, refresh) pair, as the app's installation would give one."""
        with self._lock:
            return self._new_pair()

    def _new_pair(self) -> tuple[str, str]:
        access, refresh = secrets.token_hex(35), secrets.token_hex(35)  # 70 hex: real ones
        self._expires[access] = self.clock() + self.lifetime_sec
        self._refresh.add(refresh)
        self.issued += [access, refresh]
        return access, refresh

    def check(self, token: str) -> None:
        """Raise the portal's answer for a token it does not accept."""
        if not token:
            raise no_auth_found()
        if token in self.static:
            return
        with self._lock:
            expires = self._expires.get(token)
        if expires is None:
            raise invalid_token()
        if expires <= self.clock():
            raise expired_token()

    def refresh(self, params: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body) of `/oauth/token/?grant_type=refresh_token&...`."""
        if params.get("grant_type") != "refresh_token":
            return 400, {"error": "invalid_request", "error_description": "Invalid grant_type"}
        if not params.get("refresh_token"):
            description = 'No "refresh_token" parameter found'
            return 400, {"error": "invalid_request", "error_description": description}
        if params.get("client_id") != self.client_id:
            return 200, {"error": "wrong_client"}  # HTTP 200, as live portals answer
        if params.get("client_secret") != self.client_secret:
            return 400, {"error": "invalid_client"}
        with self._lock:
            used = str(params["refresh_token"])
            if used not in self._refresh:
                return 400, {"error": "invalid_grant"}
            self._refresh.discard(used)  # single-use
            access, refresh = self._new_pair()
            self.refreshes += 1
        return 200, {
            "access_token": access,
            "client_endpoint": "",  # filled in by the portal with its own URL
            "domain": "oauth.bitrix.info",
            "expires": int(self.clock() + self.lifetime_sec),
            "expires_in": int(self.lifetime_sec),
            "member_id": "sandbox0000000000000000000000001",
            "refresh_token": refresh,
            "scope": ",".join(self.scopes),
            "server_endpoint": "",  # filled in by the portal: it is its own OAuth server
            "status": "L",
            "user_id": 1,
        }
