"""Where recording downloads may go: the portal and the configured recording hosts, on
public addresses or inside the private networks the operator trusts (a PBX on 10.x), never
elsewhere (outside the sandbox), whatever a link or a redirect says."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from calltexts_assets.clients.bitrix24.errors import RecordingRefused
from calltexts_assets.runlog.masking import mask_url

Resolver = Callable[[str], list[str]]


def resolve_addresses(host: str) -> list[str]:
    """Every address the name resolves to (what a connection may end up using)."""
    return sorted({info[4][0] for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)})


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _address(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _allowed(address: str, networks: tuple[Network, ...]) -> bool:
    ip = _address(address)
    if ip.is_global and not ip.is_multicast:
        return True
    return any(ip in network for network in networks)


def host_matches(host: str, allowed: str) -> bool:
    """`allowed` names a host; `.example.com` names example.com and its subdomains."""
    if allowed.startswith("."):
        return host == allowed[1:] or host.endswith(allowed)
    return host == allowed


class RecordingTargets:
    """Checks a recording URL (and each redirect) before anything is sent to it."""

    def __init__(
        self,
        hosts: Iterable[str],
        *,
        networks: Iterable[str] = (),
        allow_private: bool = False,
        resolve: Resolver = resolve_addresses,
    ) -> None:
        self.hosts = tuple(h.lower() for h in hosts if h)
        # private networks the operator trusts (CALLTEXTS_RECORDING_NETWORKS, validated there)
        self.networks = tuple(ipaddress.ip_network(n, strict=False) for n in networks)
        self.allow_private = allow_private  # the sandbox: everything is on loopback
        self._resolve = resolve

    def check(self, url: str) -> None:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        masked = mask_url(url)
        if parts.scheme not in ("http", "https") or not host:
            raise RecordingRefused(
                f"not an http(s) recording link [{masked}]", method="download", code="bad_link"
            )
        if not any(host_matches(host, allowed) for allowed in self.hosts):
            raise RecordingRefused(
                f"recording host {host} is neither the portal nor in CALLTEXTS_RECORDING_HOSTS "
                f"[{masked}]",
                method="download",
                code="host_not_allowed",
            )
        if self.allow_private:
            return
        try:
            addresses = [host] if _is_ip(host) else self._resolve(host)
        except OSError as exc:
            raise RecordingRefused(
                f"recording host {host} does not resolve ({exc}) [{masked}]",
                method="download",
                code="unresolvable_host",
            ) from None
        refused = [a for a in addresses if not _allowed(a, self.networks)]
        if refused or not addresses:
            raise RecordingRefused(
                f"recording host {host} resolves to a private, loopback or link-local address "
                f"({', '.join(refused) or 'none'}) outside CALLTEXTS_RECORDING_NETWORKS: "
                f"refused [{masked}]",
                method="download",
                code="address_not_allowed",
            )


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    return True
