"""The docs tell the truth about the code: the config reference is the schema's, and
every link between the pages leads somewhere."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_the_committed_config_reference_is_the_schemas(cli) -> None:
    generated = cli("schema", "--format", "markdown")
    assert generated.exit_code == 0, generated.output
    committed = (ROOT / "docs" / "reference.md").read_text()
    assert committed == generated.stdout, (
        "docs/reference.md is stale: run `trainkit schema --format markdown > "
        "docs/reference.md` and commit it"
    )


def test_the_reference_lists_every_component_and_key(cli) -> None:
    from trainkit.config.registry import REGISTRIES

    page = (ROOT / "docs" / "reference.md").read_text()
    for registry in REGISTRIES.values():
        for entry in registry:
            assert f"### `{entry.name}`" in page
            for key in entry.params.model_fields:
                if key != "name":
                    assert f"| `{key}` |" in page, (entry.name, key)


def test_the_readme_is_a_front_page_and_every_link_resolves() -> None:
    readme = ROOT / "README.md"
    assert len(readme.read_text().splitlines()) <= 250
    pages = [readme, *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if not target.startswith(("http://", "https://")):
                assert (page.parent / target).exists(), f"{page.name} links to {target}"
    linked = set(re.findall(r"\(docs/([\w.-]+\.md)\)", readme.read_text()))
    assert linked == {p.name for p in (ROOT / "docs").glob("*.md")}  # every page reachable
