"""`trainkit validate`, `ls` and `schema`: the config and the components, without torch."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from trainkit.cli.app import Overrides, Plugins, Unsets, command, command_line, stdout

if TYPE_CHECKING:
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
    import textwrap

    from trainkit.config.plugins import load_components
    from trainkit.config.reference import keys
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

    def say(text: str, indent: int, style: str | None = None, hang: int = 0) -> None:
        """`text` wrapped to the terminal's width (80 columns in a pipe), every line
        indented (the later ones `hang` more), so a list of keys reads at any width."""
        lines = textwrap.wrap(
            text,
            max(40, console.width),
            initial_indent=" " * indent,
            subsequent_indent=" " * (indent + hang),
            break_on_hyphens=False,
        )
        for line in lines:
            console.print(line, style=style, highlight=False, markup=False)

    def show(params: type[Params], shared: type[Params] | None = None) -> None:
        for key in keys(params, shared):
            default = "required" if key.default == "required" else f"= {key.default}"
            say(f"{key.name}: {key.type} {default}", 4)
            if key.description:
                say(key.description, 8, "dim")

    for key in [kind] if kind else list(REGISTRIES):
        registry = REGISTRIES[key]
        console.print(key, style="bold underline", highlight=False)
        if registry.base.model_fields:
            say(f"every {registry.kind} takes:", 2, "italic")
            show(registry.base)
        for entry in registry:
            say(f"{entry.name}: {entry.summary}", 2, "bold", hang=len(entry.name) + 2)
            show(entry.params, registry.base)
        console.print()


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
