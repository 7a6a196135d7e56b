"""YAML composed within limits, so a hostile agent file fails fast instead of running forever.

An alias (``*a``) repeats everything its anchor (``&a``) holds. Composing is cheap (an alias is
one shared node), but everything after it (turning nodes into values, validation, JSON Schema
checks) walks the expanded tree: nine levels of nine aliases in 700 bytes are 387 million
nodes ("billion laughs"). :func:`compose` counts the nodes the expanded document would have,
and its nesting depth, *while* composing, and stops at the first alias that goes past a limit,
with its line and key. A file bigger than :data:`MAX_FILE_BYTES` is not read at all.

The counting composer runs on libyaml's parser (``CParser``) when PyYAML was built with it, and
on PyYAML's own parser otherwise; both give the same nodes as :func:`yaml.compose`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import yaml
from yaml.composer import Composer, ComposerError
from yaml.events import AliasEvent, MappingEndEvent, SequenceEndEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

#: Agent files bigger than this are refused before they are read (a long prompt is ~20 KiB).
MAX_FILE_BYTES: Final = 1024 * 1024
#: Nodes (keys, values, items) in the document with every alias expanded. The bundled examples
#: have a few hundred; a file with dozens of tools and large parameter schemas a few thousand.
MAX_NODES: Final = 50_000
#: Nesting of mappings and lists, aliases expanded (a tool's JSON Schema nests ~5 per level).
MAX_DEPTH: Final = 64

_Parser: Final[Any] = getattr(yaml, "CParser", None)


class LimitError(ComposerError):
    """The document goes past a limit; ``problem_mark`` is where, ``key`` the path if known."""

    def __init__(self, message: str, mark: Any, key: str) -> None:
        super().__init__(None, None, message, mark)
        self.key = key


class _CountingComposer(Composer):
    """PyYAML's composer, counting the expanded document's nodes and depth as it goes."""

    max_nodes: int = MAX_NODES
    max_depth: int = MAX_DEPTH

    if TYPE_CHECKING:  # from the parser and the resolver it is mixed with

        def peek_event(self) -> Any: ...
        def get_event(self) -> Any: ...
        def check_event(self, *choices: Any) -> bool: ...
        def resolve(self, kind: Any, value: Any, implicit: Any) -> Any: ...

    def __init__(self) -> None:
        super().__init__()
        self.expanded = 0  # nodes so far, each alias counted as everything it repeats
        self._path: list[str] = []  # keys and [index]es down to the node being composed
        self._frames: list[list[int]] = []  # [size, height] of each collection being composed
        self._measured: dict[int, tuple[int, int]] = {}  # id(anchored node) -> (size, height)

    def key(self) -> str:
        text = ""
        for part in self._path:
            text = f"{text}{part}" if part.startswith("[") or not text else f"{text}.{part}"
        return text

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()
        if isinstance(event, AliasEvent):
            node = super().compose_node(parent, index)  # raises on an undefined alias
            measured = self._measured.get(id(node))
            if measured is None:
                raise LimitError(
                    f"alias *{event.anchor} is inside its own anchor &{event.anchor} "
                    "(a document that never ends)",
                    event.start_mark,
                    self.key(),
                )
            size, height = measured
            self._add(size, height, event.start_mark, f"alias *{event.anchor}")
            return node
        if len(self._frames) >= self.max_depth:
            raise LimitError(
                f"nested more than {self.max_depth} levels deep", event.start_mark, self.key()
            )
        self._frames.append([1, 0])
        self.expanded += 1
        self._check(event.start_mark, "this value")
        node = super().compose_node(parent, index)
        size, height = self._frames.pop()
        if event.anchor is not None:
            self._measured[id(node)] = (size, height)
        if self._frames:
            frame = self._frames[-1]
            frame[0] += size
            frame[1] = max(frame[1], height + 1)
        return node

    def _add(self, size: int, height: int, mark: Any, what: str) -> None:
        self.expanded += size
        if len(self._frames) + height > self.max_depth:
            raise LimitError(
                f"{what} nests the document more than {self.max_depth} levels deep",
                mark,
                self.key(),
            )
        self._check(mark, what)
        frame = self._frames[-1]
        frame[0] += size
        frame[1] = max(frame[1], height + 1)

    def _check(self, mark: Any, what: str) -> None:
        if self.expanded > self.max_nodes:
            raise LimitError(
                f"{what} makes the document more than {self.max_nodes} values with its aliases "
                "expanded"
                + (
                    " (each alias repeats everything its anchor holds)"
                    if what != "this value"
                    else ""
                ),
                mark,
                self.key(),
            )

    def compose_sequence_node(self, anchor: Any) -> SequenceNode:
        start = self.get_event()
        tag = start.tag
        if tag is None or tag == "!":
            tag = self.resolve(SequenceNode, None, start.implicit)
        node = SequenceNode(tag, [], start.start_mark, None, flow_style=start.flow_style)
        if anchor is not None:
            self.anchors[anchor] = node
        index = 0
        while not self.check_event(SequenceEndEvent):
            self._path.append(f"[{index}]")
            node.value.append(self.compose_node(node, index))
            self._path.pop()
            index += 1
        node.end_mark = self.get_event().end_mark
        return node

    def compose_mapping_node(self, anchor: Any) -> MappingNode:
        start = self.get_event()
        tag = start.tag
        if tag is None or tag == "!":
            tag = self.resolve(MappingNode, None, start.implicit)
        node = MappingNode(tag, [], start.start_mark, None, flow_style=start.flow_style)
        if anchor is not None:
            self.anchors[anchor] = node
        while not self.check_event(MappingEndEvent):
            item_key = self.compose_node(node, None)
            name = str(item_key.value) if isinstance(item_key, ScalarNode) else "?"
            self._path.append(name)
            item_value = self.compose_node(node, item_key)
            self._path.pop()
            node.value.append((item_key, item_value))
        node.end_mark = self.get_event().end_mark
        return node


if _Parser is not None:

    class _Loader(_CountingComposer, _Parser, Resolver):  # type: ignore[misc]
        def __init__(self, stream: str) -> None:
            _Parser.__init__(self, stream)
            _CountingComposer.__init__(self)
            Resolver.__init__(self)

else:  # pragma: no cover - PyYAML without libyaml

    class _Loader(  # type: ignore[no-redef]
        yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser, _CountingComposer, Resolver
    ):
        def __init__(self, stream: str) -> None:
            yaml.reader.Reader.__init__(self, stream)
            yaml.scanner.Scanner.__init__(self)
            yaml.parser.Parser.__init__(self)
            _CountingComposer.__init__(self)
            Resolver.__init__(self)


def compose(text: str, *, max_nodes: int = MAX_NODES, max_depth: int = MAX_DEPTH) -> Node | None:
    """The document's root node, as :func:`yaml.compose` with the safe resolver gives it; raises
    :class:`LimitError` past a limit and :class:`yaml.YAMLError` for YAML that is not valid."""
    loader = _Loader(text)
    loader.max_nodes = max_nodes
    loader.max_depth = max_depth
    try:
        node: Node | None = loader.get_single_node()
        return node
    finally:
        dispose = getattr(loader, "dispose", None)
        if dispose is not None:
            dispose()
