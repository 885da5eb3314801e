"""`trainkit validate`, `ls` and `schema`: the config and the components, without torch."""

from __future__ import annotations

import json
from pathlib import Path
from types import UnionType
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args, get_origin

import typer

from trainkit.cli.app import Overrides, Plugins, Unsets, command, command_line, stdout

if TYPE_CHECKING:
    from rich.text import Text

    from trainkit.registry import Params


@command()
def validate(
    config: Annotated[Path, typer.Argument(help="The YAML experiment file.")],
    overrides: Overrides = None,
    unsets: Unsets = None,
) -> None:
    """Check an experiment file (with its bases) and print it with every default filled in."""
    from trainkit.config import to_yaml
    from trainkit.layers import load_config

    typer.echo(to_yaml(load_config(config, command_line(overrides, unsets))), nl=False)


def _type_name(annotation: Any) -> str:
    """Types as a user writes them in YAML terms: `int | None`, `'relu' | 'tanh'`."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:  # PositiveInt and the like: the type, not its constraints
        return _type_name(args[0])
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (Union, UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))


def _describe_params(params: type[Params], shared: type[Params] | None = None) -> Text:
    """Each parameter with its type, default and description; those `shared` with the
    registry's base (same default and meaning) are left to the table's first row."""
    from rich.text import Text

    text = Text()
    common = shared.model_fields if shared is not None else {}
    for name, field in params.model_fields.items():
        same = common.get(name)
        if same is not None and (same.default, same.description) == (
            field.default,
            field.description,
        ):
            continue
        default = (
            "required"
            if field.is_required()
            else f"= {field.get_default(call_default_factory=True)!r}"
        )
        text.append(f"{name}", style="bold")
        text.append(f": {_type_name(field.annotation)} {default}\n")
        if field.description:
            text.append(f"  {field.description}\n", style="dim")
    text.rstrip()
    return text


@command()
def ls(
    kind: Annotated[
        str | None,
        typer.Argument(
            help="models, datasets, losses, optimizers or schedulers; all when left out."
        ),
    ] = None,
    plugins: Plugins = None,
) -> None:
    """List the registered components and their parameters."""
    from rich.table import Table

    from trainkit.errors import UserError
    from trainkit.registry import REGISTRIES, load_components, suggest

    if kind is not None and kind not in REGISTRIES:
        kinds = list(REGISTRIES)
        raise UserError(
            f"ls: there is no kind of component called {kind!r}{suggest(kind, kinds)} "
            f"Choose one of: {', '.join(kinds)}."
        )
    console = stdout()
    load_components(plugins or [])
    for key in [kind] if kind else list(REGISTRIES):
        table = Table(title=key, show_lines=True)
        table.add_column("name", style="bold")
        table.add_column("what it is")
        table.add_column("parameters")
        registry = REGISTRIES[key]
        if registry.base.model_fields:
            every = f"(every {registry.kind})"
            table.add_row(every, "shared by all below", _describe_params(registry.base))
        for entry in registry:
            table.add_row(entry.name, entry.summary, _describe_params(entry.params, registry.base))
        console.print(table)


@command()
def schema(plugins: Plugins = None) -> None:
    """Print the JSON schema of experiment files (for editor completion)."""
    from trainkit.config import config_model
    from trainkit.registry import load_components

    load_components(plugins or [])
    typer.echo(json.dumps(config_model().model_json_schema(), indent=2))
