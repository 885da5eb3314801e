"""Validation errors a user can act on: one paragraph that names each field path, what
was wrong, what would be right (the closest valid key or component name) and the
`--set`/`--unset` option behind it, if there was one."""

from __future__ import annotations

import re
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ValidationError

from trainkit.config.registry import REGISTRIES, suggest
from trainkit.errors import shown


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (through Optional, Union, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if get_origin(annotation) is not None:
        return [m for arg in get_args(annotation) for m in _models_in(arg)]
    return []


def _walk(root: type[BaseModel], loc: tuple[Any, ...]) -> tuple[list[str], list[type[BaseModel]]]:
    """Follow an error location through the schema.

    Returns the path as the user writes it (union tags dropped) and the models that can
    stand at the end of it, so an unknown key can be compared with the keys allowed there.
    """
    path: list[str] = []
    models: list[type[BaseModel]] = [root]
    for part in loc:
        tagged = [m for m in models if _tag_of(m) == part]
        if tagged:
            models = tagged
            continue
        if not models and _is_member_label(part):
            continue
        path.append(str(part))
        if isinstance(part, int):  # an item of a list of models: still those models
            continue
        fields = [m.model_fields[part] for m in models if part in m.model_fields]
        models = [m for f in fields for m in _models_in(f.annotation)]
    return path, models


_PLAIN_TYPES = {"str", "int", "float", "bool", "none", "list", "dict"}


def _is_member_label(part: Any) -> bool:
    """Whether a location part is how pydantic names the member of a plain union
    (`literal['auto']`, `dict[str,...]`), which is not a key the user wrote."""
    return isinstance(part, str) and ("[" in part or part in _PLAIN_TYPES)


def _closest_members(errors: list[Any]) -> list[Any]:
    """Of the errors one value gets from the members of a plain union (`auto`, or a
    mapping), keep those of the member that got furthest into it: a mapping with one
    bad entry is not also told that it should be 'auto'."""
    deepest: dict[tuple[Any, ...], int] = {}
    for error in errors:
        loc = tuple(error["loc"])
        for i, part in enumerate(loc):
            if _is_member_label(part):
                deepest[loc[:i]] = max(deepest.get(loc[:i], 0), len(loc))
    kept = []
    for error in errors:
        loc = tuple(error["loc"])
        at = next((i for i, part in enumerate(loc) if _is_member_label(part)), None)
        if at is None or len(loc) == deepest[loc[:at]]:
            kept.append(error)
    # A word that is not one of the choices is not also told it is not a boolean
    # (`augment: trivial` against `bool | Literal[...]`).
    chosen = {tuple(e["loc"][:-1]) for e in kept if e["type"] == "literal_error"}
    return [e for e in kept if not (e["type"] == "bool_parsing" and tuple(e["loc"][:-1]) in chosen)]


def _tag_of(model: type[BaseModel]) -> str | None:
    field = model.model_fields.get("name")
    if field is not None and get_origin(field.annotation) is Literal:
        return get_args(field.annotation)[0]
    return None


def format_errors(
    exc: ValidationError, root: type[BaseModel], source: str, command_line: dict[str, str]
) -> str:
    """One line per problem: the field path, what was wrong, what would be right, and
    the command-line option behind it when there was one."""
    lines = [f"{source} is not a valid experiment:"]
    blamed = False
    for error in _closest_members(exc.errors(include_url=False)):
        line, option = _describe(error, root), _option_behind(error, root, command_line)
        blamed |= option is not None
        lines.append(f"  {line.removesuffix('.')} (from {option})." if option else f"  {line}")
    lines.append(
        (
            "Fix the --set/--unset options or the file"
            if blamed
            else "Fix the file or override with --set KEY=VALUE"
        )
        + "; `trainkit ls` lists components and their parameters."
    )
    return "\n".join(lines)


def _option_behind(error: Any, root: type[BaseModel], command_line: dict[str, str]) -> str | None:
    """The --set/--unset that touched the key an error is about, if any."""
    path = ".".join(_walk(root, tuple(error["loc"]))[0])
    for key, option in command_line.items():
        if path == key or path.startswith(key + ".") or key.startswith(path + "."):
            return option
    return None


def _describe(error: Any, root: type[BaseModel]) -> str:
    kind = error["type"]
    loc = tuple(error["loc"])
    path, _ = _walk(root, loc)
    field = ".".join(path) or "(top level)"
    if kind == "extra_forbidden":
        parent, models = _walk(root, loc[:-1])
        key = str(loc[-1])
        allowed = sorted({name for m in models for name in m.model_fields} - {"name"})
        where = ".".join(parent) or "(top level)"
        if not allowed:
            names = " or ".join(sorted({str(_tag_of(m)) for m in models if _tag_of(m)}))
            return f"{where}: unknown key {key!r}; {names or 'this section'} takes no parameters."
        listed = ", ".join(allowed)
        return f"{where}: unknown key {key!r}{suggest(key, allowed)} Allowed here: {listed}."
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        registry = next(r for r in REGISTRIES.values() if r.section == path[0])
        choices = ", ".join(registry.names())
        if kind == "union_tag_not_found":
            return f"{field}.name: missing; it selects the {registry.kind}, one of: {choices}."
        tag = shown(str(error["ctx"]["tag"]))
        return (
            f"{field}.name: there is no {registry.kind} called {tag!r}"
            f"{suggest(tag, registry.names())} Choose one of: {choices}."
        )
    if kind == "missing":
        return f"{field}: required but missing."
    if kind == "literal_error" and isinstance(error.get("input"), str):
        choices = re.findall(r"'([^']*)'", error["ctx"]["expected"])
        got = shown(error["input"])
        return (
            f"{field}: {got!r} is not one of the choices{suggest(got, choices)} "
            f"Choose one of: {', '.join(choices)}."
        )
    got = error.get("input")
    echoed = "" if isinstance(got, dict) else f" (got {shown(repr(got))})"
    message = error["msg"].removeprefix("Value error, ")  # our validators' own sentences
    return f"{field}: {message}{echoed}."
