"""The emulated portal's error answers: `{"error": ..., "error_description": ...}` with the
HTTP status a real portal gives (docs/specs/bitrix24_wire.md §5; payloads error_*.json)."""

from __future__ import annotations


class ApiError(Exception):
    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.status, self.error, self.description = status, error, description

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


def expired_token() -> ApiError:
    return ApiError(401, "expired_token", "The access token provided has expired")


def invalid_token() -> ApiError:
    return ApiError(401, "invalid_token", "Unable to get application by token")


def no_auth_found() -> ApiError:
    return ApiError(401, "NO_AUTH_FOUND", "Wrong authorization data")


def invalid_credentials() -> ApiError:
    return ApiError(401, "INVALID_CREDENTIALS", "Invalid request credentials")


def insufficient_scope(webhook: bool) -> ApiError:
    holder = "webhook token" if webhook else "access token"
    return ApiError(
        401,
        "insufficient_scope",
        f"The request requires higher privileges than provided by the {holder}",
    )


def access_denied() -> ApiError:
    return ApiError(403, "ACCESS_DENIED", "Access denied!")


def operation_time_limit() -> ApiError:
    return ApiError(429, "OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit.")


def method_not_found() -> ApiError:
    return ApiError(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
