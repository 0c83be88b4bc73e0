"""Request validation errors in FastAPI's shape: every problem, with pydantic v2's types and texts.

msgspec (api/rendering.py) decodes every request and stops at the first problem. Only when it
refuses does this module run: it walks the plain data against the declared type, collects every
problem (``{"type", "loc", "msg", "input", "ctx"}``, as FastAPI sends them) and coerces what
pydantic's lax mode accepts and msgspec does not (``"yes"`` for a bool, ``" 7 "`` for an int).
When nothing is wrong after all, the coerced data is converted and the request goes on. The
success path never comes here, so its cost is msgspec's alone.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import msgspec
import msgspec.inspect as mi

from seatlock.errors import RequestInvalid

Loc = tuple[str | int, ...]
Problem = dict[str, Any]
Check = Callable[[Any, Any, Loc, list[Problem]], Any]

_INT_TEXT = re.compile(r"[+-]?\d+(?:\.0*)?")  # what pydantic parses as an int ("7", "7.0")
MAX_INT_TEXT = 4300  # Python's limit of digits converted (sys.get_int_max_str_digits)
_TRUE = frozenset({"1", "t", "y", "on", "yes", "true"})
_FALSE = frozenset({"0", "f", "n", "no", "off", "false"})
_AT = re.compile(r" - at `\$(.*)`$")
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


def problem(
    kind: str, loc: Loc, msg: str, value: Any, ctx: dict[str, Any] | None = None
) -> Problem:
    found: Problem = {"type": kind, "loc": list(loc), "msg": msg, "input": value}
    if ctx is not None:
        found["ctx"] = ctx
    return found


def validate(data: Any, kind: Any, root: Loc) -> Any:
    """``data`` as ``kind`` when pydantic's lax rules accept it; else RequestInvalid, listing
    every problem with its location under ``root`` (``("body",)`` or ``("query",)``)."""
    problems: list[Problem] = []
    coerced = check(_type_info(kind), data, root, problems)
    if problems:
        raise RequestInvalid(problems)
    try:
        return msgspec.convert(coerced, type=kind, strict=False)
    except msgspec.ValidationError as exc:  # a rule the walk does not know (a time zone...)
        raise RequestInvalid([from_msgspec(str(exc), coerced, root)]) from None


def _type_info(kind: Any) -> mi.Type:
    info = _INFO.get(kind)
    if info is None:
        info = _INFO[kind] = mi.type_info(kind)
    return info


_INFO: dict[Any, mi.Type] = {}  # one entry per declared body or query type


def check(node: Any, value: Any, loc: Loc, problems: list[Problem]) -> Any:
    """``value`` coerced to ``node``'s type; what is wrong with it is added to ``problems``."""
    while isinstance(node, mi.Metadata):
        node = node.type
    handler = _CHECKS.get(type(node), _by_msgspec)
    return handler(node, value, loc, problems)


def from_msgspec(message: str, data: Any, root: Loc) -> Problem:
    """A problem from a msgspec message (``Expected `int`, got `str` - at `$.seat_ids[2]` ``)."""
    match = _AT.search(message)
    text = message[: match.start()] if match else message
    loc = root + (_path(match.group(1)) if match else ())
    kind, msg = _KNOWN.get(text, ("value_error", f"Value error, {text}"))
    return problem(kind, loc, msg, _at(data, loc[len(root) :]))


# msgspec's refusals that pydantic names (the rest are value_error).
_KNOWN = {
    "Expected `datetime` with a timezone component": (
        "timezone_aware",
        "Input should have timezone info",
    ),
    "Expected `datetime` with no timezone component": (
        "timezone_naive",
        "Input should not have timezone info",
    ),
    "Expected `time` with a timezone component": (
        "timezone_aware",
        "Input should have timezone info",
    ),
    "Expected `time` with no timezone component": (
        "timezone_naive",
        "Input should not have timezone info",
    ),
}


def _path(text: str) -> Loc:
    return tuple(int(m[1]) if m[1] else m[0] for m in _STEP.findall(text))


def _at(data: Any, path: Loc) -> Any:
    for step in path:
        try:
            data = data[step]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _struct(node: mi.StructType, value: Any, loc: Loc, problems: list[Problem]) -> Any:
    if not isinstance(value, dict):
        text = "Input should be a valid dictionary or object to extract fields from"
        problems.append(problem("model_attributes_type", loc, text, value))
        return value
    coerced: dict[str, Any] = {}
    for field in node.fields:
        name, where = field.encode_name, (*loc, field.encode_name)
        if name in value:
            coerced[name] = check(field.type, value[name], where, problems)
        elif field.required:  # FastAPI shows the body for a missing field, None for a query's
            shown = value if loc[:1] == ("body",) else None
            problems.append(problem("missing", where, "Field required", shown))
    if node.forbid_unknown_fields:
        known = {field.encode_name for field in node.fields}
        for name in value.keys() - known:
            text = "Extra inputs are not permitted"
            problems.append(problem("extra_forbidden", (*loc, name), text, value[name]))
    return coerced


def _union(node: mi.UnionType, value: Any, loc: Loc, problems: list[Problem]) -> Any:
    if value is None and node.includes_none:
        return None
    first: list[Problem] | None = None
    for member in node.types:
        if isinstance(member, mi.NoneType):
            continue
        found: list[Problem] = []
        coerced = check(member, value, loc, found)
        if not found:
            return coerced
        first = found if first is None else first
    problems += first or [problem("none_required", loc, "Input should be None", value)]
    return value


def _int(node: mi.IntType, value: Any, loc: Loc, problems: list[Problem]) -> Any:
    return _number(node, _as_int(value), value, loc, problems)


def _number(
    node: mi.IntType | mi.FloatType,
    number: float | str,
    value: Any,
    loc: Loc,
    problems: list[Problem],
) -> Any:
    """``number`` (read from ``value``, or the type of its error) checked against the bounds."""
    if isinstance(number, str):
        problems.append(problem(number, loc, _NUMBER_TEXT[number], value))
        return value
    _bounds(node, number, value, loc, problems)
    return number


def _as_int(value: Any) -> int | str:
    """The int pydantic reads in ``value``, or the type of its error."""
    if isinstance(value, int):  # a bool too: pydantic's lax mode takes it as 0 or 1
        return int(value)
    if isinstance(value, float):
        return int(value) if value.is_integer() else "int_from_float"
    if isinstance(value, str):
        text = value.strip()
        if len(text) > MAX_INT_TEXT or not _INT_TEXT.fullmatch(text):
            return "int_parsing"
        return int(text.partition(".")[0])
    return "int_type"


def _float(node: mi.FloatType, value: Any, loc: Loc, problems: list[Problem]) -> Any:
    return _number(node, _as_float(value), value, loc, problems)


def _as_float(value: Any) -> float | str:
    try:
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            return float(value.strip())
    except OverflowError:  # an integer past the largest float
        return "float_type"
    except ValueError:
        return "float_parsing"
    return "float_type"


_NUMBER_TEXT = {
    "int_type": "Input should be a valid integer",
    "int_parsing": "Input should be a valid integer, unable to parse string as an integer",
    "int_from_float": "Input should be a valid integer, got a number with a fractional part",
    "float_type": "Input should be a valid number",
    "float_parsing": "Input should be a valid number, unable to parse string as a number",
}


def _bounds(
    node: mi.IntType | mi.FloatType, number: float, value: Any, loc: Loc, problems: list[Problem]
) -> None:
    """The bounds' problems; ``value`` as it was sent, as pydantic shows it."""
    limits = (("gt", node.gt), ("ge", node.ge), ("lt", node.lt), ("le", node.le))
    for key, limit in limits:
        if limit is not None and not _BOUNDS[key][1](number, limit):
            kind, _, words = _BOUNDS[key]
            text = f"Input should be {words} {limit}"
            problems.append(problem(kind, loc, text, value, {key: limit}))
    step = node.multiple_of
    if step is not None and number % step:
        text = f"Input should be a multiple of {step}"
        problems.append(problem("multiple_of", loc, text, value, {"multiple_of": step}))


# Bound -> (pydantic's error type, the test a number passes, the words of its message).
_BOUNDS: dict[str, tuple[str, Callable[[float, float], bool], str]] = {
    "gt": ("greater_than", lambda n, x: n > x, "greater than"),
    "ge": ("greater_than_equal", lambda n, x: n >= x, "greater than or equal to"),
    "lt": ("less_than", lambda n, x: n < x, "less than"),
    "le": ("less_than_equal", lambda n, x: n <= x, "less than or equal to"),
}


def _bool(node: mi.BoolType, value: Any, loc: Loc, problems: list[Problem]) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    if isinstance(value, int | float | str):
        text = "Input should be a valid boolean, unable to interpret input"
        problems.append(problem("bool_parsing", loc, text, value))
    else:
        problems.append(problem("bool_type", loc, "Input should be a valid boolean", value))
    return value


def _str(node: mi.StrType, value: Any, loc: Loc, problems: list[Problem]) -> Any:
    if not isinstance(value, str):
        problems.append(problem("string_type", loc, "Input should be a valid string", value))
        return value
    low, high = node.min_length, node.max_length
    if low is not None and len(value) < low:
        text = f"String should have at least {low} character{_plural(low)}"
        problems.append(problem("string_too_short", loc, text, value, {"min_length": low}))
    if high is not None and len(value) > high:
        text = f"String should have at most {high} character{_plural(high)}"
        problems.append(problem("string_too_long", loc, text, value, {"max_length": high}))
    if node.pattern is not None and not re.search(node.pattern, value):
        text = f"String should match pattern '{node.pattern}'"
        ctx = {"pattern": node.pattern}
        problems.append(problem("string_pattern_mismatch", loc, text, value, ctx))
    return value


def _plural(count: int) -> str:
    return "" if count == 1 else "s"


def _array(node: Any, value: Any, loc: Loc, problems: list[Problem]) -> Any:
    if not isinstance(value, list):
        problems.append(problem("list_type", loc, "Input should be a valid list", value))
        return value
    items = [check(node.item_type, item, (*loc, i), problems) for i, item in enumerate(value)]
    low, high, size = node.min_length, node.max_length, len(value)
    if low is not None and size < low:
        text = f"List should have at least {low} item{_plural(low)} after validation, not {size}"
        ctx = {"field_type": "List", "min_length": low, "actual_length": size}
        problems.append(problem("too_short", loc, text, value, ctx))
    if high is not None and size > high:
        text = f"List should have at most {high} item{_plural(high)} after validation, not {size}"
        ctx = {"field_type": "List", "max_length": high, "actual_length": size}
        problems.append(problem("too_long", loc, text, value, ctx))
    return items


def _dict(node: mi.DictType, value: Any, loc: Loc, problems: list[Problem]) -> Any:
    if not isinstance(value, dict):
        problems.append(problem("dict_type", loc, "Input should be a valid dictionary", value))
        return value
    return {k: check(node.value_type, v, (*loc, k), problems) for k, v in value.items()}


def _literal(node: mi.LiteralType, value: Any, loc: Loc, problems: list[Problem]) -> Any:
    if value in node.values:
        return value
    expected = _one_of(node.values)
    text = f"Input should be {expected}"
    problems.append(problem("literal_error", loc, text, value, {"expected": expected}))
    return value


def _enum(node: mi.EnumType, value: Any, loc: Loc, problems: list[Problem]) -> Any:
    values = tuple(member.value for member in node.cls)
    if value in values:
        return value
    expected = _one_of(values)
    problems.append(
        problem("enum", loc, f"Input should be {expected}", value, {"expected": expected})
    )
    return value


def _one_of(values: tuple[Any, ...]) -> str:
    """pydantic's list of choices: ``'a', 'b' or 'c'``."""
    shown = [repr(v) for v in values]
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"


def _none(node: mi.NoneType, value: Any, loc: Loc, problems: list[Problem]) -> Any:
    if value is not None:
        problems.append(problem("none_required", loc, "Input should be None", value))
    return value


def _any(node: Any, value: Any, loc: Loc, problems: list[Problem]) -> Any:
    return value


# Types checked by msgspec itself, one value at a time, with pydantic's name for the error.
_SCALARS: dict[type[Any], tuple[type[Any], str]] = {
    mi.DateTimeType: (datetime, "datetime"),
    mi.DateType: (date, "date"),
    mi.TimeType: (time, "time"),
    mi.TimeDeltaType: (timedelta, "timedelta"),
    mi.DecimalType: (Decimal, "decimal"),
    mi.UUIDType: (uuid.UUID, "uuid"),
}


def _by_msgspec(node: Any, value: Any, loc: Loc, problems: list[Problem]) -> Any:
    """A kind of type the walk does not know: the final conversion of ``validate`` judges it."""
    scalar = _SCALARS.get(type(node))
    if scalar is None:
        return value
    kind, name = scalar
    try:
        msgspec.convert(value, type=kind, strict=False)
    except msgspec.ValidationError as exc:
        error = str(exc).split(" - at ", 1)[0]
        if isinstance(value, str):
            text = f"Input should be a valid {name}, {error[:1].lower()}{error[1:]}"
            problems.append(problem(f"{name}_parsing", loc, text, value, {"error": error}))
        else:
            problems.append(problem(f"{name}_type", loc, f"Input should be a valid {name}", value))
    return value


_CHECKS: dict[type[Any], Check] = {
    mi.StructType: _struct,
    mi.UnionType: _union,
    mi.IntType: _int,
    mi.FloatType: _float,
    mi.BoolType: _bool,
    mi.StrType: _str,
    mi.ListType: _array,
    mi.VarTupleType: _array,
    mi.SetType: _array,
    mi.FrozenSetType: _array,
    mi.DictType: _dict,
    mi.LiteralType: _literal,
    mi.EnumType: _enum,
    mi.NoneType: _none,
    mi.AnyType: _any,
}
