"""Validate a report's JSON against ``report.schema.json`` without a JSON Schema library.

Only the subset of draft 2020-12 that the report schema uses is implemented: ``type``,
``properties``, ``required``, ``additionalProperties``, ``items``, ``enum``, ``const``,
``pattern``, ``minLength``, ``minimum`` and local ``$ref`` into ``$defs``. A schema that uses
any other assertion keyword is rejected (:class:`ValueError`) rather than half-checked.

:func:`read_json` reads a JSON file the suite is given (a report, an ``--outputs``
manifest): whatever is wrong with the file (unreadable, not UTF-8, not JSON, nested deeper
than :data:`MAX_DEPTH`) is a :class:`ValueError` that names it.
"""

from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["MAX_DEPTH", "SCHEMA_PATH", "load_schema", "nesting_error", "read_json",
           "validate"]

SCHEMA_PATH = Path(__file__).with_name("report.schema.json")

#: How deeply the arrays and objects of a JSON document the suite reads may nest. A report
#: nests about 6 levels; past this limit a document is refused rather than handed to code
#: that walks it recursively (the validator, the renderers, ``json.dumps``).
MAX_DEPTH = 64

# Keywords that only annotate (or hold definitions); they assert nothing.
_ANNOTATIONS = frozenset({"$schema", "$id", "$comment", "$defs", "title", "description",
                          "default", "examples", "format"})
_ASSERTIONS = frozenset({"type", "properties", "required", "additionalProperties", "items",
                         "enum", "const", "pattern", "minLength", "minimum", "$ref"})
_IDENTIFIER = re.compile(r"[A-Za-z_]\w*")  # a property written $.name, others $['na me']


@lru_cache(maxsize=1)
def _packaged_schema() -> str:
    return SCHEMA_PATH.read_text(encoding="utf-8")


def load_schema() -> dict[str, Any]:
    """The report schema shipped with attnspec (a fresh copy, safe to modify)."""
    schema: dict[str, Any] = json.loads(_packaged_schema())
    return schema


def _too_deep(limit: int) -> str:
    return f"nested too deeply (more than {limit} levels of arrays and objects)"


def nesting_error(data: Any, limit: int = MAX_DEPTH) -> str:
    """``"nested too deeply (...)"`` when the lists and dicts of ``data`` nest more than
    ``limit`` levels, else ``""``. Walks ``data`` without recursion."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, (list, tuple)):
            children = value
        else:
            continue
        if depth > limit:
            return _too_deep(limit)
        stack.extend((child, depth + 1) for child in children)
    return ""


class _NotFinite(Exception):
    """A NaN, an infinity, or a number too large for a float, in a JSON text."""


def _no_constant(text: str) -> Any:
    raise _NotFinite(text)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400
        raise _NotFinite(text)
    return value


def read_json(path: str | Path, *, what: str = "a JSON file") -> Any:
    """The parsed content of the JSON file ``path``.

    Parameters
    ----------
    path : str or Path
    what : str
        What the file should be, for messages: ``"a JSON report"``.

    Raises
    ------
    ValueError
        Naming ``path``, when it cannot be read, is not UTF-8 text, is not JSON (``NaN``,
        ``Infinity`` and numbers beyond a float's range are not), or nests deeper than
        :data:`MAX_DEPTH`.
    """
    try:
        raw = Path(path).read_bytes()
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        raise ValueError(f"{path}: cannot read it ({exc})") from None
    try:
        text = raw.decode("utf-8-sig")  # a byte order mark (some Windows editors) is fine
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not {what} (not UTF-8 text: {exc})") from None
    try:
        data = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not {what} (not valid JSON: {exc})") from None
    except _NotFinite as exc:
        raise ValueError(f"{path}: not {what} (not valid JSON: {exc} is not a JSON number; "
                         "JSON has no NaN or infinity)") from None
    except RecursionError:
        raise ValueError(f"{path}: not {what}: {_too_deep(MAX_DEPTH)}") from None
    problem = nesting_error(data)
    if problem:
        raise ValueError(f"{path}: not {what}: {problem}")
    return data


def validate(data: Any, schema: dict[str, Any] | None = None) -> list[str]:
    """Problems that keep ``data`` from matching ``schema`` (the report schema by default).

    Parameters
    ----------
    data : object
        Parsed JSON (``Report.to_json()`` or ``json.load`` of a saved report).
    schema : dict, optional
        A schema in the supported subset; default :func:`load_schema`.

    Returns
    -------
    list of str
        One line per problem, each starting with the JSON path of the offending value
        (``$.results[3].outcome: 'passed' is not one of ...``); empty when ``data`` is valid.
        A document nested deeper than :data:`MAX_DEPTH` is one problem, ``$: nested too
        deeply``, and is not checked further.
    """
    if schema is None:
        schema = load_schema()
    if not isinstance(schema, dict):
        raise TypeError(f"schema must be a dict (a JSON Schema), got {type(schema).__name__}")
    too_deep = nesting_error(data)
    if too_deep:
        return [f"$: {too_deep}"]
    problems: list[str] = []
    _check(data, schema, schema, "$", problems)
    return problems


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _is_type(value: Any, expected: str) -> bool:
    actual = _type_name(value)
    if expected == "number":
        return actual in ("integer", "number")
    if expected == "integer":
        # JSON Schema: an integer is any number with no fractional part (1.0 included).
        return actual == "integer" or (actual == "number" and float(value).is_integer())
    return actual == expected


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _resolve(ref: str, root: dict[str, Any]) -> dict[str, Any]:
    if not ref.startswith("#/"):
        raise ValueError(f"schema $ref {ref!r}: only local references ('#/...') are supported")
    node: Any = root
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            raise ValueError(f"schema $ref {ref!r} does not resolve")
        node = node[part]
    resolved: dict[str, Any] = node  # JSON: a reference names a schema, and schemas are dicts
    return resolved


def _check(value: Any, schema: Any, root: dict[str, Any], path: str,
           problems: list[str]) -> None:
    if schema is True:
        return
    if schema is False:
        problems.append(f"{path}: no value is allowed here")
        return
    unknown = set(schema) - _ASSERTIONS - _ANNOTATIONS
    if unknown:
        raise ValueError(f"schema at {path} uses unsupported keywords {sorted(unknown)}; "
                         f"supported: {sorted(_ASSERTIONS)}")
    if "$ref" in schema:
        _check(value, _resolve(schema["$ref"], root), root, path, problems)

    if "type" in schema:
        expected = schema["type"]
        expected = [expected] if isinstance(expected, str) else list(expected)
        if not any(_is_type(value, t) for t in expected):
            problems.append(f"{path}: expected {' or '.join(expected)}, got "
                            f"{_type_name(value)} {_short(value)}")
            return  # the remaining keywords would only repeat the type mismatch
    if isinstance(value, float) and not math.isfinite(value):
        # Not a JSON value at all: Report.to_json writes null for a non-finite error.
        problems.append(f"{path}: {value} is not a finite number (JSON has no NaN/inf; "
                        f"use null)")
        return
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(repr(v) for v in schema["enum"])
        problems.append(f"{path}: {_short(value)} is not one of {allowed}")
    if "const" in schema and value != schema["const"]:
        problems.append(f"{path}: expected {schema['const']!r}, got {_short(value)}")

    if isinstance(value, str):
        if "pattern" in schema and re.search(schema["pattern"], value) is None:
            problems.append(f"{path}: {_short(value)} does not match the pattern "
                            f"{schema['pattern']!r}")
        if "minLength" in schema and len(value) < schema["minLength"]:
            problems.append(f"{path}: {_short(value)} is shorter than {schema['minLength']} "
                            f"character(s)")
    if _is_type(value, "number") and "minimum" in schema and value < schema["minimum"]:
        problems.append(f"{path}: {value} is less than the minimum {schema['minimum']}")

    if isinstance(value, dict):
        for name in schema.get("required", ()):
            if name not in value:
                problems.append(f"{path}: missing required property {name!r}")
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for name, item in value.items():
            if not isinstance(name, str):
                problems.append(f"{path}: property name {name!r} is not a string")
                continue
            child = f"{path}.{name}" if _IDENTIFIER.fullmatch(name) else \
                f"{path}[{name!r}]"
            if name in properties:
                _check(item, properties[name], root, child, problems)
            elif extra is False:
                allowed = ", ".join(sorted(properties))
                problems.append(f"{path}: unexpected property {name!r} (allowed: {allowed})")
            else:
                _check(item, extra, root, child, problems)
    if isinstance(value, (list, tuple)) and "items" in schema:
        for index, item in enumerate(value):
            _check(item, schema["items"], root, f"{path}[{index}]", problems)
