"""Masking of webhook codes, tokens and phone numbers."""

from __future__ import annotations

import logging

import pytest

from calltexts_assets.runlog.masking import MaskingFilter, mask_phone, mask_text, mask_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://portal.bitrix24.ru/rest/1/abc123secret/voximplant.statistic.get.json",
            "https://portal.bitrix24.ru/rest/1/***/voximplant.statistic.get.json",
        ),
        (
            "https://portal.bitrix24.ru/rest/17/abc123secret/",
            "https://portal.bitrix24.ru/rest/17/***/",
        ),
        (
            "https://portal.bitrix24.ru/rest/batch.json?auth=tok123&halt=0",
            "https://portal.bitrix24.ru/rest/batch.json?auth=***&halt=0",
        ),
        (
            "https://u:pw@proxy.local:3128/x?Access_Token=zz",
            "https://***@proxy.local:3128/x?Access_Token=***",
        ),
        ("http://127.0.0.1:9/sandbox/records/17.mp3", "http://127.0.0.1:9/sandbox/records/17.mp3"),
    ],
)
def test_mask_url(url: str, expected: str) -> None:
    assert mask_url(url) == expected


def test_mask_url_on_a_message_masks_the_urls_inside_and_keeps_the_rest() -> None:
    message = "batch failed after 6 attempts [https://p.ru/rest/1/s3cr3tcode/batch.json] q?a=1 b"
    masked = mask_url(message)
    assert "s3cr3tcode" not in masked
    assert masked == "batch failed after 6 attempts [https://p.ru/rest/1/***/batch.json] q?a=1 b"


def test_mask_text_masks_literal_secrets_but_not_short_ones() -> None:
    text = "token oauth-tok-123 rejected; code ab"
    assert mask_text(text, ["oauth-tok-123", "ab"]) == "token *** rejected; code ab"


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        ("+79161234567", "+7******4567"),
        ("8 (916) 123-45-67", "8******4567"),
        ("+1 415 555 0199", "+1******0199"),
        ("12345", "*2345"),
        ("101", "***"),
        ("", ""),
        (None, ""),
    ],
)
def test_mask_phone(number: str | None, expected: str) -> None:
    assert mask_phone(number) == expected


def test_masking_filter_rewrites_log_arguments() -> None:
    record = logging.LogRecord(
        "httpx",
        logging.INFO,
        __file__,
        1,
        "HTTP Request: %s %s %d",
        ("POST", "https://p.ru/rest/1/s3cr3tcode/batch.json", 200),
        None,
    )
    assert MaskingFilter().filter(record)
    assert record.getMessage() == "HTTP Request: POST https://p.ru/rest/1/***/batch.json 200"
