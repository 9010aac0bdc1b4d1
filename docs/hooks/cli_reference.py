"""MkDocs hook: the CLI reference, generated from the click commands at build time.

A page holding the line ``<!-- hystate:cli-reference -->`` gets, in its place, one section per
command (the groups' subcommands nested under them) with exactly what ``hystate ... --help``
prints, so the reference cannot drift from the code. A command without help text fails the
build. ``<!-- hystate:stages -->`` becomes the table of legal moves, read from the public API.
"""

from __future__ import annotations

from typing import Any

import click

CLI_MARKER = "<!-- hystate:cli-reference -->"
STAGES_MARKER = "<!-- hystate:stages -->"
WIDTH = 90  # the help text is wrapped as on a 90-column terminal


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_reference())
    if STAGES_MARKER in markdown:
        markdown = markdown.replace(STAGES_MARKER, stages_table())
    return markdown


def cli_reference() -> str:
    from hystate.cli import cli

    settings = {**cli.context_settings, "terminal_width": WIDTH, "max_content_width": WIDTH}
    root = click.Context(cli, info_name="hystate", **settings)
    parts = [_help_block(root)]
    parts += _commands(cli, root, level=2)
    return "\n".join(parts)


def _commands(group: click.Group, parent: click.Context, level: int) -> list[str]:
    parts: list[str] = []
    for name in group.list_commands(parent):
        command = group.get_command(parent, name)
        if command is None or command.hidden:
            continue
        ctx = click.Context(command, info_name=name, parent=parent, **command.context_settings)
        path = ctx.command_path
        if not (command.help or "").strip():
            raise ValueError(f"`{path}` has no help text: write its docstring")
        anchor = path.replace(" ", "-")
        parts.append(f"{'#' * level} `{path}` {{#{anchor}}}\n")
        parts.append(command.get_short_help_str(limit=200) + "\n")
        parts.append(_help_block(ctx))
        if isinstance(command, click.Group):
            parts += _commands(command, ctx, level + 1)
    return parts


def _help_block(ctx: click.Context) -> str:
    text = ctx.command.get_help(ctx)
    return f"```text\n$ {ctx.command_path} --help\n{text}\n```\n"


def stages_table() -> str:
    from hystate import ProcessingStage, StateTransitionValidator

    rows = ["| stage | may move to |", "|---|---|"]
    for stage in ProcessingStage:
        nexts = StateTransitionValidator.VALID_TRANSITIONS.get(stage, [])
        shown = ", ".join(f"`{s.value}`" for s in nexts) or "— (final)"
        rows.append(f"| `{stage.value}` | {shown} |")
    return "\n".join(rows) + "\n"
