"""How a config is assembled: base files, the experiment file, then the command line.

An experiment file may start from others (`base: other.yaml`, or a list applied in
order): mappings merge key by key, lists and scalars are replaced, the later layer wins.
The command line comes last: `--unset KEY` removes a key (so it takes its default), then
`--set KEY=VALUE` sets one. What is saved with a run is the result, with no `base:` left.

Choosing another component in a later layer (`loss: {name: mse}` in a child file, or
`--set loss.name=mse`) keeps the parameters the new component accepts and drops the
ones it inherited and does not accept, with a warning naming them, as LightningCLI does
for a changed class_path. A key the later layer sets itself is never dropped: a typo
there is still an error.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trainkit.config.plugins import load_components
from trainkit.config.registry import REGISTRIES
from trainkit.config.renames import RENAMED, rename_keys, renamed_key
from trainkit.config.schema import Config, validate
from trainkit.console import warn
from trainkit.errors import UserError, shown

COMPONENT_SECTIONS = tuple(registry.section for registry in REGISTRIES.values())


@dataclass
class Switch:
    """A component section whose `name` a later layer changed."""

    section: str
    old: str
    new: str
    inherited: set[str]  # keys that came from the earlier layer
    by: str  # which layer: a file, or the --set that did it


@dataclass
class CommandLine:
    """`--set KEY=VALUE` and `--unset KEY` items, as given."""

    sets: list[str] = field(default_factory=list)
    unsets: list[str] = field(default_factory=list)

    def origins(self) -> dict[str, str]:
        """Dotted key -> the option that set or removed it (for error messages)."""
        found = {_current(key): f"--unset {key}" for key in self.unsets}
        for item in self.sets:
            found[_current(item.partition("=")[0])] = f"--set {shown(item)}"
        return found


def _current(key: str) -> str:
    return RENAMED.get(key.strip(), key.strip())


def load_config(path: Path, command_line: CommandLine | None = None) -> Config:
    """Read an experiment file with its bases, apply the command line, and validate."""
    switches: list[Switch] = []
    raw = read_layers(path, switches)
    return resolve(raw, command_line or CommandLine(), str(path), switches, search=path.parent)


def resolve(
    raw: dict[str, Any],
    command_line: CommandLine,
    source: str,
    switches: list[Switch] | None = None,
    search: Path | None = None,
    origins: dict[str, str] | None = None,
) -> Config:
    """Apply the command line to `raw`, drop what component switches leave behind, and
    validate (the plugins imported first, from `search` or the recorded `origins`).

    Renamed keys in `raw` itself (a config stored by an older trainkit) are read under
    their new names without a warning; files and options warn as they are read.
    """
    raw = overridden(raw, command_line, switches, search, origins)
    return validate(raw, source, search, origins, command_line.origins())


def overridden(
    raw: dict[str, Any],
    command_line: CommandLine,
    switches: list[Switch] | None = None,
    search: Path | None = None,
    origins: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A copy of `raw` with the command line applied and what component switches leave
    behind dropped, not yet validated (a sweep stores its base this way)."""
    switches = list(switches or [])
    raw = apply_command_line(rename_keys(copy.deepcopy(raw), None), command_line, switches)
    plugins = raw.get("plugins") or []
    if isinstance(plugins, list) and all(isinstance(p, str) for p in plugins):
        load_components(plugins, search, origins)
    for switch in switches:
        _drop_inherited(raw, switch)
    return raw


def dotted(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"optimizer": {"lr": 0.1}} -> {"optimizer.lr": 0.1}: a config as flat dotted keys,
    as --set names them."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            flat.update(dotted(value, name))
        else:
            flat[name] = value
    return flat


def read_yaml(
    path: Path, kind: str = "an experiment", sections: str = "name, model, data"
) -> dict[str, Any]:
    """One YAML file as a dict, or a UserError saying why it cannot be read; `kind` and
    `sections` name what the file should be, for the messages."""
    if not path.is_file():
        raise UserError(f"config file not found: {path}. Pass the path of {kind} file (YAML).")
    try:
        raw = yaml.safe_load(path.read_text())
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a text file; {kind} file is YAML text.") from None
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc)
        raise UserError(f"{path} is not valid YAML{where}: {shown(problem)}.") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path} must hold a mapping of sections ({sections}, ...).")
    return raw


def read_layers(path: Path, switches: list[Switch], chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """`path` merged over its bases (recursively), with the component switches noted."""
    here = path.resolve()
    if here in chain:
        cycle = " -> ".join(str(p) for p in (*chain, here))
        raise UserError(f"base: the files include each other in a cycle: {cycle}. Remove one base.")
    raw = rename_keys(read_yaml(path), str(path))
    bases = raw.pop("base", None)
    if bases is None:
        return raw
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise UserError(f"{path}: base must be a file name or a list of them (got {shown(bases)}).")
    merged: dict[str, Any] = {}
    for base in bases:
        base_path = path.parent / base
        if not base_path.is_file():
            via = " -> ".join(str(p) for p in (*chain, here))
            raise UserError(
                f"{path}: base {base!r} not found (looked for {base_path}; reached through "
                f"{via}). A base is a path relative to the file that names it."
            )
        merged = merge(merged, read_layers(base_path, switches, (*chain, here)), switches, base)
    return merge(merged, raw, switches, str(path))


def merge(
    base: dict[str, Any], child: dict[str, Any], switches: list[Switch], by: str
) -> dict[str, Any]:
    """`child` over `base`: mappings key by key, everything else replaced."""
    result = copy.deepcopy(base)
    for key, value in child.items():
        earlier = result.get(key)
        if isinstance(value, dict) and isinstance(earlier, dict):
            if key in COMPONENT_SECTIONS:
                _note_switch(switches, key, earlier, value, by)
            result[key] = merge(earlier, value, [], by)
        else:
            result[key] = copy.deepcopy(value)
    return result


def _note_switch(
    switches: list[Switch], section: str, earlier: dict[str, Any], later: dict[str, Any], by: str
) -> None:
    old, new = earlier.get("name"), later.get("name")
    if old is not None and new is not None and old != new:
        inherited = set(earlier) - set(later) - {"name"}
        switches.append(Switch(section, str(old), str(new), inherited, by))


def apply_command_line(
    raw: dict[str, Any], command_line: CommandLine, switches: list[Switch]
) -> dict[str, Any]:
    """`--unset` items, then `--set` items, applied to a copy of `raw`."""
    result = copy.deepcopy(raw)
    for key in command_line.unsets:
        _unset(result, renamed_key(key, f"--unset {key}"))
    for item in command_line.sets:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UserError(
                f"--set {shown(item)!r}: expected KEY=VALUE with a dotted key, "
                "e.g. --set optimizer.lr=0.01 or --set trainer.epochs=5."
            )
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        key = renamed_key(key, f"--set {shown(item)}")
        *parents, leaf = key.strip().split(".")
        node = result
        for depth, part in enumerate(parents):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(parents[: depth + 1])
                raise UserError(f"--set {key}: {where} is {shown(child)}, not a section with keys.")
            node = child
        if parents == [] or len(parents) > 1 or parents[0] not in COMPONENT_SECTIONS:
            node[leaf] = value
            continue
        if leaf == "name" and node.get("name") not in (None, value):
            inherited = set(node) - {"name"}
            switches.append(
                Switch(parents[0], str(node["name"]), str(value), inherited, f"--set {item}")
            )
        for switch in switches:  # a key set after a switch is the user's own
            if switch.section == parents[0]:
                switch.inherited.discard(leaf)
        node[leaf] = value
    return result


def _unset(raw: dict[str, Any], key: str) -> None:
    *parents, leaf = key.strip().split(".")
    node: Any = raw
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict) or leaf not in node:
        where = ".".join(parents)
        present = sorted(node) if isinstance(node, dict) else []
        listed = f"; {where or 'the top level'} sets: {', '.join(present)}" if present else ""
        raise UserError(
            f"--unset {key}: the config does not set {key}, so it is its default already{listed}."
        )
    del node[leaf]


def _drop_inherited(raw: dict[str, Any], switch: Switch) -> None:
    """Remove the inherited keys the new component does not accept, and say so."""
    section = raw.get(switch.section)
    registry = next(r for r in REGISTRIES.values() if r.section == switch.section)
    if not isinstance(section, dict) or switch.new not in registry.names():
        return  # validation reports the unknown component
    accepted = registry.get(switch.new).params.model_fields
    dropped = sorted(k for k in switch.inherited if k in section and k not in accepted)
    for key in dropped:
        del section[key]
    if dropped:
        warn(
            f"{switch.section}: {switch.by} chose {switch.new} instead of {switch.old}; dropped "
            f"{', '.join(dropped)}, which {switch.new} does not take."
        )
