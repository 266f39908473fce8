"""mkdocs hook: the command-line reference (reference/cli.md), written at build time from promptkit's own argument
parser (promptkit.cli.build_parser), so the page can never drift from the command. Nothing here is hand-copied:
every command, option, choice, default and help text comes from the parser."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PAGE = "reference/cli.md"
WIDTH = 100

INTRO = """# Command line

Generated from promptkit's argument parser when the site is built: every command and option below is
exactly what `promptkit --help` and `promptkit COMMAND --help` print.

Exit codes: `0` success; `1` `lint` found errors; `2` bad input (the message names the file, task, row or run
directory and what to fix; argparse's usage errors too); `130` interrupted (Ctrl-C); `143` stopped (SIGTERM).
`run` and `recommend` show a progress bar on stderr (`--quiet` hides it); results go to stdout.
"""


def _cell(text: str) -> str:
    """Plain text in a table cell: markdown's code spans stay, HTML-like text (runs/<timestamp>) is shown as written."""
    text = " ".join(str(text).split())
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


def _code(text: str) -> str:
    """Inline code that may hold backticks or pipes (a table cell)."""
    text = " ".join(str(text).split())
    return f"<code>{text.replace('&', '&amp;').replace('<', '&lt;').replace('>', '&gt;').replace('|', '&#124;')}</code>"


def _default(action: argparse.Action) -> str:
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._HelpAction)):
        return ""
    if action.default in (None, argparse.SUPPRESS) or action.required:
        return ""
    return _code(action.default)


def command_markdown(name: str, parser: argparse.ArgumentParser, summary: str) -> list[str]:
    parser.formatter_class = lambda prog: argparse.HelpFormatter(prog, width=WIDTH)
    formatter = parser._get_formatter()
    lines = [f"## promptkit {name}", "", _cell(summary) + ".", "", "```text", parser.format_usage().strip(), "```", ""]
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if not isinstance(a, argparse._HelpAction)]
        if not actions:
            continue
        title = group.title or "options"
        lines += [f"**{title[0].upper() + title[1:]}**", "", "| argument | default | what it does |", "|---|---|---|"]
        for action in actions:
            invocation = formatter._format_action_invocation(action)
            help_text = formatter._expand_help(action) if action.help else ""
            lines.append(f"| {_code(invocation)} | {_default(action)} | {_cell(help_text)} |")
        lines.append("")
    return lines


def cli_markdown() -> str:
    from promptkit.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    summaries = {choice.dest: choice.help or "" for choice in sub._choices_actions}
    lines = [INTRO, "| command | what it does |", "|---|---|"]
    lines += [f"| [`promptkit {name}`](#promptkit-{name}) | {_cell(summaries[name])} |" for name in sub.choices]
    lines.append("")
    for name, command in sub.choices.items():
        lines += command_markdown(name, command, summaries[name])
    return "\n".join(lines) + "\n"


def on_files(files, config):
    from mkdocs.structure.files import File

    root = Path(config["config_file_path"]).resolve().parent
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))  # the checkout's promptkit, installed or not
    files.append(File.generated(config, PAGE, content=cli_markdown()))
    return files
