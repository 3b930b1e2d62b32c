"""Every command a user can run is documented where a newcomer looks."""

from pathlib import Path

import typer.main

from otsec.cli.main import app

ROOT = Path(__file__).resolve().parents[1]


def command_paths(group, prefix=""):
    for name, cmd in group.commands.items():
        path = f"{prefix} {name}".strip()
        if hasattr(cmd, "commands"):
            yield from command_paths(cmd, path)
        else:
            yield path, cmd


def test_every_command_is_in_the_readme_and_has_help():
    readme = (ROOT / "README.md").read_text()
    group = typer.main.get_command(app)
    paths = dict(command_paths(group))
    assert {"analyze", "check", "policy validate", "policy init", "baseline learn", "baseline show",
            "baseline diff", "report", "sensor"} <= set(paths)
    for path, cmd in paths.items():
        assert f"otsec {path}" in readme, f"README does not show 'otsec {path}'"
        assert cmd.help, f"'otsec {path}' has no help text"
        for param in cmd.params:
            assert param.help, f"'otsec {path}' option {param.name} has no help text"


def test_docs_link_targets_exist():
    import re

    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for target in re.findall(r"\]\(([^)#:]+\.md)\)", doc.read_text()):
            assert (doc.parent / target).exists(), f"{doc.name} links to missing {target}"
