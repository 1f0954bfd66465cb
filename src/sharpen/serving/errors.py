"""Errors answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

from typing import Any, Optional, Sequence


class APIError(Exception):
    """An error answered to the client with an HTTP status and OpenAI's error body."""

    def __init__(self, status: int, message: str, *, param: Optional[str] = None,
                 code: Optional[str] = None, type: Optional[str] = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or ("invalid_request_error" if status < 500 else "server_error")

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad(message: str, param: Optional[str] = None, code: Optional[str] = None) -> APIError:
    """A 400."""
    return APIError(400, message, param=param, code=code)


def param_path(loc: Sequence[Any]) -> Optional[str]:
    """A pydantic error location as the request parameter it names:
    ("body", "messages", 0, "role") -> "messages[0].role"; the body itself -> None."""
    parts = [p for p in loc if p != "body"]
    # union members and tagged variants add type names (e.g. "str", "list[str]") to the path
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif "[" in str(part) or str(part) in {"str", "int", "float", "bool", "list", "dict", "function-after"}:
            continue
        else:
            text += ("." if text else "") + str(part)
    return text or None


def validation_error(errors: Sequence[dict]) -> APIError:
    """A 400 for the first problem pydantic found in a request body, naming its parameter."""
    first = errors[0]
    param = param_path(first.get("loc", ()))
    kind = first.get("type", "")
    if kind == "json_invalid":
        return bad("the request body is not valid JSON", code="invalid_json")
    if kind == "extra_forbidden":
        return bad(f"parameter {param!r} is not supported by this server", param, "unsupported_parameter")
    if kind == "missing":
        return bad(f"{param!r} is required", param)
    if param is None:
        return bad(f"the request body must be a JSON object: {first.get('msg', 'invalid')}")
    return bad(f"{param!r}: {first.get('msg', 'invalid value')}", param)
