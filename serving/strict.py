"""One strict pydantic base for every config, rule and manifest model, and one way to explain its errors.

Unknown keys are refused (a misspelt key is a mistake, not a silent default), NaN and
infinity are refused (a threshold of ``Infinity`` passes every part), and a validation
error becomes lines that name the dotted field, so the person who wrote it can fix it.

>>> from pydantic import Field
>>> class Demo(StrictModel):
...     rate_hz: float = Field(gt=0)
>>> try:
...     Demo.model_validate({"rate_hz": -1, "rate": 2})
... except Exception as exc:
...     print(describe_errors(exc, prefix="source", model=Demo))
source.rate_hz: Input should be greater than 0 (got -1)
source.rate: unknown field; allowed: rate_hz
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError


class StrictModel(BaseModel):
    """Base of every typed config: unknown fields and non-finite numbers are errors."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)


def field_error(field: str, message: str, value) -> ValidationError:
    """A validation error located at ``field``, for cross-field checks: the message names the field to fix."""
    return ValidationError.from_exception_data("config", [InitErrorDetails(
        type=PydanticCustomError("value_error", "Value error, {m}", {"m": message}), loc=(field,), input=value)])


def _allowed_fields(model: type[BaseModel] | None, loc: tuple) -> list[str]:
    """Field names allowed at the parent of ``loc`` (for 'unknown field' hints)."""
    for part in loc[:-1]:
        if model is None:
            return []
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None) if field else None
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    return sorted(model.model_fields) if model is not None else []


def _secret(field: str) -> bool:
    return any(w in field.lower() for w in ("password", "token", "secret", "key"))


def error_lines(exc: ValidationError, prefix: str = "", model: type[BaseModel] | None = None) -> list[str]:
    """One ``field: message`` line per error; ``prefix`` is prepended to every dotted field name."""
    lines = []
    for e in exc.errors():
        loc = tuple(e["loc"])
        if loc and loc[0] in ("body", "path", "query"):  # FastAPI's request location adds nothing for the reader
            loc = loc[1:]
        field = ".".join(str(p) for p in ((prefix,) if prefix else ()) + loc) or prefix or "(top level)"
        kind, msg = e["type"], e["msg"]
        if kind == "extra_forbidden":
            allowed = _allowed_fields(model, loc)
            msg = "unknown field" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
        elif kind == "value_error":
            msg = msg.removeprefix("Value error, ")
        elif "input" in e and not isinstance(e["input"], (dict, list)) and kind != "missing" and not _secret(field):
            got = repr(e["input"])
            msg += f" (got {got[:60] + '...' if len(got) > 60 else got})"
        lines.append(f"{field}: {msg}")
    return lines


def describe_errors(exc: ValidationError, prefix: str = "", model: type[BaseModel] | None = None) -> str:
    """All errors of ``exc`` as lines (see :func:`error_lines`)."""
    return "\n".join(error_lines(exc, prefix, model))
