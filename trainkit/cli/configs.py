"""`trainkit validate`, `ls` and `schema`: the config and the components, without torch."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from trainkit.cli.app import Overrides, Plugins, Unsets, command, command_line, stdout

if TYPE_CHECKING:
    from rich.text import Text

    from trainkit.config.registry import Params


@command()
def validate(
    config: Annotated[Path, typer.Argument(help="The YAML experiment file.")],
    overrides: Overrides = None,
    unsets: Unsets = None,
) -> None:
    """Check an experiment file (with its bases) and print it with every default filled in."""
    from trainkit.config.loading import load_config
    from trainkit.config.schema import to_yaml

    typer.echo(to_yaml(load_config(config, command_line(overrides, unsets))), nl=False)


def _describe(params: type[Params], shared: type[Params] | None = None) -> Text:
    """Each parameter with its type, default and description, as `ls` shows them; those
    `shared` with the registry's base are left to the table's first row."""
    from rich.text import Text

    from trainkit.config.reference import keys

    text = Text()
    for key in keys(params, shared):
        default = "required" if key.default == "required" else f"= {key.default}"
        text.append(key.name, style="bold")
        text.append(f": {key.type} {default}\n")
        if key.description:
            text.append(f"  {key.description}\n", style="dim")
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

    from trainkit.config.plugins import load_components
    from trainkit.config.registry import REGISTRIES, suggest
    from trainkit.errors import UserError

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
            table.add_row(every, "shared by all below", _describe(registry.base))
        for entry in registry:
            table.add_row(entry.name, entry.summary, _describe(entry.params, registry.base))
        console.print(table)


class SchemaFormat(str, Enum):
    json = "json"
    markdown = "markdown"


@command()
def schema(
    plugins: Plugins = None,
    output: Annotated[
        SchemaFormat,
        typer.Option(
            "--format",
            help="json: the JSON schema (for editor completion); markdown: the config "
            "reference, as in docs/reference.md.",
        ),
    ] = SchemaFormat.json,
) -> None:
    """Print the schema of experiment files: JSON schema, or the reference in Markdown."""
    from trainkit.config.plugins import load_components
    from trainkit.config.schema import config_model

    load_components(plugins or [])
    if output is SchemaFormat.markdown:
        from trainkit.config.reference import markdown

        typer.echo(markdown(), nl=False)
        return
    typer.echo(json.dumps(config_model().model_json_schema(), indent=2))
