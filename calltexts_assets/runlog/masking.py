"""Masking of secrets and personal data before anything reaches a log or an error message."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

MASK = "***"

# Query parameters that carry credentials: Bitrix24 (`auth`, `token` of DOWNLOAD_URL and
# upload links), OAuth, signed storage links (S3 presigned, generic `signature`/`sig`).
_SECRET_PARAMS = frozenset(
    {
        "auth",
        "access_token",
        "refresh_token",
        "token",
        "client_secret",
        "code",
        "key",
        "sig",
        "signature",
        "secret",
        "password",
        "api_key",
        "apikey",
        "x-amz-signature",
        "x-amz-credential",
        "x-amz-security-token",
    }
)
_SECRET_QUERY = re.compile(
    r"((?:^|&)(?:" + "|".join(sorted(_SECRET_PARAMS)) + r")=)[^&]*", re.IGNORECASE
)
# /rest/<user_id>/<webhook code>/...: the code is the whole secret of a webhook.
_WEBHOOK_PATH = re.compile(r"(/rest/\d+/)([^/?#\s]+)")
_URL_IN_TEXT = re.compile(r"https?://[^\s'\"<>]+")
_SINGLE_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://\S+")


def mask_url(url: str) -> str:
    """The URL with the webhook code, credential query values and userinfo replaced by ***.

    `https://portal/rest/1/abc123/x.json?auth=tok` -> `https://portal/rest/1/***/x.json?auth=***`
    Anything that is not one URL (say, an exception message) is masked as text.
    """
    if not _SINGLE_URL.fullmatch(url):
        return mask_text(url)
    return _mask_one_url(url)


def _mask_one_url(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return _WEBHOOK_PATH.sub(rf"\g<1>{MASK}", url)
    netloc = parts.netloc
    if "@" in netloc:  # user:password@host
        netloc = f"{MASK}@{netloc.rsplit('@', 1)[1]}"
    path = _WEBHOOK_PATH.sub(rf"\g<1>{MASK}", parts.path)
    query = _SECRET_QUERY.sub(rf"\g<1>{MASK}", parts.query)
    return urlunsplit((parts.scheme, netloc, path, query, parts.fragment))


def public_url(url: str) -> tuple[str, bool]:
    """The link as it may be stored and published, and whether anything was taken out.

    Secret query parameters are dropped (a masked value would only make a broken link),
    userinfo is dropped and a webhook code in the path becomes ***. Whoever needs the
    working link again asks Bitrix24 for a fresh one.
    `https://gw/rec/1.mp3?record_id=5&token=t` -> (`https://gw/rec/1.mp3?record_id=5`, True)
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return mask_text(url), True
    netloc = parts.netloc.rsplit("@", 1)[-1]
    path = _WEBHOOK_PATH.sub(rf"\g<1>{MASK}", parts.path)
    kept = [
        pair
        for pair in parts.query.split("&")
        if pair and pair.split("=", 1)[0].lower() not in _SECRET_PARAMS
    ]
    query = "&".join(kept)
    cleaned = urlunsplit((parts.scheme, netloc, path, query, parts.fragment))
    changed = (netloc, path, query) != (parts.netloc, parts.path, parts.query.strip("&"))
    return cleaned, changed


def mask_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Mask the literal secrets first (whatever they contain, spaces included), then every
    URL inside free text."""
    masked = text
    for secret in secrets:
        if secret and len(secret) >= 4:  # a 1-3 char "secret" would mask random text
            masked = masked.replace(secret, MASK)
    masked = _URL_IN_TEXT.sub(lambda m: _mask_one_url(m.group(0)), masked)
    return _WEBHOOK_PATH.sub(rf"\g<1>{MASK}", masked)


def mask_phone(number: str | None) -> str:
    """Keep the country digit and the last 4 digits: "+79161234567" -> "+7******4567".

    Numbers of 5-7 digits keep only the last 4; 4 digits or fewer are masked entirely.
    """
    if not number:
        return ""
    digits = re.sub(r"\D", "", number)
    plus = "+" if number.strip().startswith("+") else ""
    if len(digits) <= 4:
        return "*" * len(digits)
    if len(digits) >= 8:
        return f"{plus}{digits[0]}{'*' * (len(digits) - 5)}{digits[-4:]}"
    return f"{plus}{'*' * (len(digits) - 4)}{digits[-4:]}"


class MaskingFilter(logging.Filter):
    """Masks URLs (webhook codes, auth params) in log records of libraries such as httpx,
    which log every request URL at INFO."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = mask_text(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_mask_arg(a) for a in record.args)
        return True


def _mask_arg(arg: object) -> object:
    if isinstance(arg, str):
        return mask_text(arg)
    if arg is None or isinstance(arg, int | float):
        return arg
    text = str(arg)  # e.g. httpx.URL
    return mask_text(text) if "://" in text else arg


_installed: set[str] = set()


def install_log_masking(*logger_names: str) -> None:
    """Attach one `MaskingFilter` to each named logger (idempotent)."""
    for name in logger_names:
        if name not in _installed:
            logging.getLogger(name).addFilter(MaskingFilter())
            _installed.add(name)
