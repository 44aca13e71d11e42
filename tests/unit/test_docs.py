from __future__ import annotations

from pathlib import Path

from localserve.config.settings import settings_reference

ROOT = Path(__file__).resolve().parents[2]


def test_settings_doc_is_generated_from_the_fields() -> None:
    assert (ROOT / "docs" / "settings.md").read_text() == settings_reference(), (
        "docs/settings.md is stale: regenerate it with "
        "python -c 'from localserve.config.settings import settings_reference as r; "
        'open("docs/settings.md", "w").write(r())\''
    )


def test_every_cli_command_is_in_the_readme() -> None:
    """Each command has a row in the README's command table (a subcommand may share its
    group's row, as in `remote on` / `remote off`)."""
    import click

    from localserve.cli.main import cli

    readme = (ROOT / "README.md").read_text()

    def commands(group: click.Group, prefix: tuple[str, ...]) -> list[tuple[str, ...]]:
        found = []
        context = click.Context(group)
        # list_commands / get_command, not .commands: the top group imports its groups lazily.
        for name in group.list_commands(context):
            command = group.get_command(context, name)
            assert command is not None, name
            if isinstance(command, click.Group):
                found += commands(command, (*prefix, name))
            else:
                found.append((*prefix, name))
        return found

    def documented(path: tuple[str, ...]) -> bool:
        if f"`localserve {' '.join(path)}" in readme:
            return True
        group, name = " ".join(path[:-1]), path[-1]
        rows = [line for line in readme.splitlines() if f"`localserve {group} " in line]
        short = (f"`{name}", f"/ {name}", f"`{path[-2]} {name}")
        return any(form in row for row in rows for form in short)

    found = commands(cli, ())
    assert ("models", "set") in found and ("chat",) in found  # the lazy ones are seen too
    missing = [" ".join(path) for path in found if not documented(path)]
    assert not missing, f"commands missing from the README's table: {missing}"
