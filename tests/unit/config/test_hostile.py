"""Hostile agent files: alias bombs, huge and deep files fail fast with file, line and key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from agent.config import limits, loader
from agent.config.loader import AgentFilesError, load

# Nine levels of nine aliases: 9**9 (387 million) strings once expanded, in under 700 bytes.
BOMB = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def bomb_file(folder: Path, where: str) -> Path:
    """An agent whose tool has the bomb in ``where`` (``parameters`` or ``http.json``)."""
    head = "system_prompt: Hi.\ntools:\n  - name: lookup\n    description: Look it up.\n"
    if where == "parameters":
        text = (
            head
            + '    http: {url: "https://example.com/x"}\n    parameters:\n'
            + textwrap.indent(BOMB, " " * 6)
        )
    else:
        text = (
            head
            + "    http:\n      url: https://example.com/x\n      method: POST\n      json:\n"
            + textwrap.indent(BOMB, " " * 8)
        )
    path = folder / "bomb.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("where", "line", "key"),
    [("parameters", 11, "tools[0].parameters.e[5]"), ("http", 13, "tools[0].http.json.e[5]")],
)
def test_an_alias_bomb_is_refused_before_anything_expands_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str, line: int, key: str
) -> None:
    path = bomb_file(tmp_path, where)
    assert len(path.read_bytes()) < 700
    walked: list[str] = []
    real_value = loader._Document.value

    def counting_value(self: loader._Document, node: yaml.Node, path: str) -> object:
        walked.append(path)
        return real_value(self, node, path)

    monkeypatch.setattr(loader._Document, "value", counting_value)
    with pytest.raises(AgentFilesError) as caught:
        load(tmp_path, env={})
    assert walked == []  # refused while composing: nothing walked the expanded tree
    (problem,) = caught.value.problems
    assert (problem.file, problem.line, problem.key) == (str(path), line, key)
    assert problem.message == (
        f"refused: alias *d makes the document more than {limits.MAX_NODES} values with its "
        "aliases expanded (each alias repeats everything its anchor holds)"
    )


def test_the_composer_stops_at_the_first_alias_past_the_limit() -> None:
    loader_ = limits._Loader("a: &a [1, 2, 3]\nb: [*a, *a, *a, *a]\n")
    loader_.max_nodes = 12
    with pytest.raises(limits.LimitError) as caught:
        loader_.get_single_node()
    # 1 root + a (key, list, 3 items) + b (key, list) = 8; each *a adds 4: the second is past 12.
    assert loader_.expanded == 16
    assert caught.value.key == "b[1]"
    assert caught.value.problem_mark is not None
    assert caught.value.problem_mark.line == 1


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path: Path) -> None:
    (tmp_path / "loop.yaml").write_text("system_prompt: Hi.\nx: &x [a, *x]\n", encoding="utf-8")
    with pytest.raises(AgentFilesError) as caught:
        load(tmp_path, env={})
    (problem,) = caught.value.problems
    assert (problem.line, problem.key) == (2, "x[1]")
    assert "alias *x is inside its own anchor &x" in problem.message


def test_deep_nesting_is_refused_with_or_without_aliases(tmp_path: Path) -> None:
    deep = "[" * (limits.MAX_DEPTH + 1) + "]" * (limits.MAX_DEPTH + 1)
    (tmp_path / "deep.yaml").write_text(f"system_prompt: Hi.\nx: {deep}\n", encoding="utf-8")
    with pytest.raises(AgentFilesError) as caught:
        load(tmp_path, env={})
    (problem,) = caught.value.problems
    assert problem.line == 2
    assert problem.message == f"refused: nested more than {limits.MAX_DEPTH} levels deep"

    half = limits.MAX_DEPTH // 2 + 1
    text = f"a: &a {'[' * half}1{']' * half}\nb: {'[' * half}*a{']' * half}\n"
    with pytest.raises(limits.LimitError, match="alias \\*a nests the document more than"):
        limits.compose(text)


def test_a_file_over_the_size_cap_is_not_read(tmp_path: Path) -> None:
    big = "system_prompt: |\n" + ("  " + "x" * 78 + "\n") * (limits.MAX_FILE_BYTES // 80 + 1)
    (tmp_path / "big.yaml").write_text(big, encoding="utf-8")
    with pytest.raises(AgentFilesError) as caught:
        load(tmp_path, env={})
    (problem,) = caught.value.problems
    assert problem.line is None
    assert "bigger than 1024 KiB" in problem.message


def test_the_counting_composer_gives_the_nodes_pyyaml_gives() -> None:
    text = textwrap.dedent(
        """
        base: &base {a: 1, b: [x, "y", 2.5, null, true]}
        other:
          <<: *base
          c: !custom tagged
          d: |
            block
        """
    )
    ours, theirs = limits.compose(text), yaml.compose(text, Loader=yaml.SafeLoader)

    def shape(node: yaml.Node) -> object:
        if isinstance(node, yaml.ScalarNode):
            return (node.tag, node.value, node.start_mark.line, node.style or None)
        if isinstance(node, yaml.SequenceNode):
            return (node.tag, [shape(n) for n in node.value])
        return (node.tag, [(shape(k), shape(v)) for k, v in node.value])

    assert ours is not None
    assert theirs is not None
    assert shape(ours) == shape(theirs)
