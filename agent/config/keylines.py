"""Where each key of a YAML file is, for errors that name the file's line: the 1-based line of
every key path (``steps[1].calls[0].wait``) in a composed YAML tree. Used by the loaders of
files other than agent files (emulator scenarios, ``agent test`` files), which validate a plain
mapping and look the failing key's line up here."""

from __future__ import annotations

import yaml


def index_key_lines(node: yaml.Node, path: str, lines: dict[str, int]) -> None:
    """Record in ``lines`` the line of ``node`` at ``path`` and of every key below it."""
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = f"{path}.{key_node.value}" if path else str(key_node.value)
            lines[child] = key_node.start_mark.line + 1
            index_key_lines(value_node, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            index_key_lines(item, f"{path}[{index}]", lines)
