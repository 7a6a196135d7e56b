"""Hostile agent files: alias bombs, huge and deep files fail fast with file, line and key."""

from __future__ import annotations

import asyncio
import os
import signal
import textwrap
import threading
from pathlib import Path

import jsonschema
import pytest
import yaml
from timing import scaled_timeout

from agent.cli.agents import check_command
from agent.config import fields, limits, loader
from agent.config import reload as reload_module
from agent.config.loader import AgentFilesError, EnvAllow, load
from agent.config.reload import AgentRegistryHolder, install_reload_on_sighup
from agent.errors import ConfigError
from agent.settings import Settings, agent_env_from_env, bridge_variables

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


# --------------------------------------------------------------------------------------------
# ${VAR}: only the variables agent files are allowed, never the bridge's own
# --------------------------------------------------------------------------------------------

TOKEN = "twilio-token-0123456789abcdef"
KEY = "gemini-key-AIzaSyExample987"


def _env_problems(folder: Path, text: str, **kwargs: object) -> list[loader.Problem]:
    (folder / "a.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(AgentFilesError) as caught:
        load(folder, **kwargs)  # type: ignore[arg-type]
    return list(caught.value.problems)


def test_the_bridges_own_secrets_are_refused_and_never_read(tmp_path: Path) -> None:
    env = {"TWILIO_AUTH_TOKEN": TOKEN, "GEMINI_API_KEY": KEY, "AGENT_NAME": "Ada"}
    text = (
        "system_prompt: |\n"
        "  You are ${AGENT_NAME}. Token ${TWILIO_AUTH_TOKEN}.\n"
        "  Key ${GEMINI_API_KEY:-none}.\n"
    )
    problems = _env_problems(tmp_path, text, env=env)
    assert [(p.line, p.key) for p in problems] == [(1, "system_prompt")] * 2
    assert problems[0].message.startswith(
        "${TWILIO_AUTH_TOKEN} is one of the bridge's own variables: agent files may never read it"
    )
    assert problems[1].message.startswith("${GEMINI_API_KEY} is one of the bridge's own")
    everything = str(AgentFilesError(problems))
    assert TOKEN not in everything
    assert KEY not in everything
    # Allowing it by prefix or by name does not help: the bridge's variables are never read.
    for allow in (EnvAllow("TWILIO_"), EnvAllow(names=frozenset({"TWILIO_AUTH_TOKEN"}))):
        problems = _env_problems(tmp_path, text, env=env, env_allow=allow)
        own = [p for p in problems if "one of the bridge's own variables" in p.message]
        assert len(own) == 2
        assert TOKEN not in str(AgentFilesError(problems))


def test_every_settings_variable_is_refused(tmp_path: Path) -> None:
    variables = bridge_variables()
    assert {"TWILIO_AUTH_TOKEN", "TWILIO_API_KEY_SECRET", "GEMINI_API_KEY", "DATABASE_URL"} <= (
        variables
    )
    assert {"STREAM_TOKEN_SECRET", "SHARED_STATE_URL", "AGENT_ENV_ALLOW"} <= variables
    assert variables == {name.upper() for name in Settings.model_fields}
    allow = EnvAllow(prefix="", names=frozenset(variables))
    assert all(allow.refusal(name) for name in variables)


def test_other_variables_need_the_prefix_or_the_allow_list(tmp_path: Path) -> None:
    env = {"ACME_HUMAN_NUMBER": "+15555550100", "AGENT_HUMAN": "+15555550101"}
    text = "system_prompt: Hi.\nfallback: {transfer_to: '${ACME_HUMAN_NUMBER:-+15555550142}'}\n"
    (problem,) = _env_problems(tmp_path, text, env=env)
    assert (problem.line, problem.key) == (2, "fallback.transfer_to")
    assert problem.message == (
        "${ACME_HUMAN_NUMBER} is not a variable agent files may read: rename it "
        "AGENT_ACME_HUMAN_NUMBER, or list it in AGENT_ENV_ALLOW"
    )
    allowed = load(tmp_path, env=env, env_allow=EnvAllow(names=frozenset({"ACME_HUMAN_NUMBER"})))
    assert allowed.default.fallback.transfer_to == "+15555550100"
    (tmp_path / "a.yaml").write_text(
        "system_prompt: Hi.\nfallback: {transfer_to: '${AGENT_HUMAN}'}\n", encoding="utf-8"
    )
    assert load(tmp_path, env=env).default.fallback.transfer_to == "+15555550101"
    # Under another prefix, AGENT_ is a prefix like any other: refused.
    (problem,) = _env_problems(tmp_path, text.replace("ACME_", "AGENT_"), env_allow=EnvAllow("S_"))
    assert problem.message.startswith("${AGENT_HUMAN_NUMBER} is not a variable agent files")
    text = text.replace("ACME_", "S_")
    (tmp_path / "a.yaml").write_text(text, encoding="utf-8")
    custom = load(tmp_path, env={"S_HUMAN_NUMBER": "+15555550102"}, env_allow=EnvAllow("S_"))
    assert custom.default.fallback.transfer_to == "+15555550102"


def test_the_allow_list_comes_from_the_settings() -> None:
    settings = Settings.from_env({"AGENT_ENV_ALLOW": "ACME_HUMAN_NUMBER, SHOP_KEY"})
    assert settings.agent_env_prefix == "AGENT_"
    assert settings.agent_env_allow == {"ACME_HUMAN_NUMBER", "SHOP_KEY"}
    with pytest.raises(ConfigError, match="AGENT_ENV_ALLOW lists TWILIO_AUTH_TOKEN, one of the"):
        Settings.from_env({"AGENT_ENV_ALLOW": "SHOP_KEY,TWILIO_AUTH_TOKEN"})
    with pytest.raises(ConfigError, match="AGENT_ENV_PREFIX must be the start of a variable"):
        Settings.from_env({"AGENT_ENV_PREFIX": "A-"})
    assert agent_env_from_env({"AGENT_ENV_PREFIX": "SHOP_", "TWILIO_AUTH_TOKEN": TOKEN}) == (
        "SHOP_",
        frozenset(),
    )


def test_the_bundled_example_reads_agent_acme_human_number() -> None:
    assert load(env={}).default.fallback.transfer_to == "+15555550142"
    registry = load(env={"AGENT_ACME_HUMAN_NUMBER": "+15555550177", "ACME_HUMAN_NUMBER": "x"})
    assert registry.default.fallback.transfer_to == "+15555550177"


def test_agent_check_reads_the_allow_list_from_its_environment(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "system_prompt: Hi.\nfallback: {transfer_to: '${SHOP_HUMAN}'}\n", encoding="utf-8"
    )
    code, text = check_command(str(tmp_path), env={"SHOP_HUMAN": "+15555550103"})
    assert code == 1
    assert "${SHOP_HUMAN} is not a variable agent files may read" in text
    env = {"SHOP_HUMAN": "+15555550103", "AGENT_ENV_ALLOW": "SHOP_HUMAN"}
    code, text = check_command(str(tmp_path), env=env)
    assert code == 0, text


# --------------------------------------------------------------------------------------------
# Reload: reading and parsing in a thread, so calls never wait for a slow file
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["reload_async", "reload_if_changed", "sighup"])
async def test_a_slow_reload_leaves_the_event_loop_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    path = tmp_path / "a.yaml"
    path.write_text("system_prompt: Hi.\n", encoding="utf-8")
    swapped = asyncio.Event()
    holder = AgentRegistryHolder(tmp_path, env={}, on_change=lambda _: swapped.set())
    path.write_text("system_prompt: Hello.\nname: changed\n", encoding="utf-8")
    os.utime(path, ns=(1, 1))  # a new fingerprint whatever the clock's resolution
    parsing, release = threading.Event(), threading.Event()
    on_the_loop: list[bool] = []
    real_load = load

    def slow_load(*args: object, **kwargs: object) -> object:
        """A parse that cannot finish until a task on the event loop lets it."""
        on_the_loop.append(_running_loop() is not None)
        parsing.set()
        # If this ran on the loop, nothing could set release: the wait would time out.
        assert release.wait(scaled_timeout(10)), "the event loop was blocked by the reload"
        return real_load(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(reload_module, "load", slow_load)
    uninstall = None
    if how == "sighup":
        uninstall = install_reload_on_sighup(asyncio.get_running_loop(), holder)
        os.kill(os.getpid(), signal.SIGHUP)
    else:
        reloading = asyncio.ensure_future(getattr(holder, how)())
    try:
        assert await asyncio.to_thread(parsing.wait, scaled_timeout(10))

        async def another_call() -> str:  # meanwhile, the loop serves others
            await asyncio.sleep(0)
            release.set()
            return "served"

        assert await another_call() == "served"
        assert on_the_loop == [False]
        await asyncio.wait_for(swapped.wait(), scaled_timeout(10))
        if how != "sighup":
            await reloading
        assert holder.current.default.name == "changed"
    finally:
        release.set()
        if uninstall is not None:
            uninstall()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def test_a_huge_parameter_schema_is_refused_before_the_meta_schema_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Within the document's limits, aliases still make a big schema; checking one against the
    meta-schema is the slow part of loading, so its size is capped first."""
    levels = ["        p0: &p0 {type: string, description: x}"] + [
        f"        p{i}: &p{i} {{type: object, properties: {{a: *p{i - 1}, b: *p{i - 1}}}}}"
        for i in range(1, 10)
    ]
    text = (
        "system_prompt: Hi.\ntools:\n  - name: t\n    description: d\n"
        '    http: {url: "https://example.com/x"}\n'
        "    parameters:\n      type: object\n      properties:\n" + "\n".join(levels) + "\n"
    )
    (tmp_path / "a.yaml").write_text(text, encoding="utf-8")
    checked: list[object] = []
    monkeypatch.setattr(
        jsonschema.Draft202012Validator, "check_schema", lambda schema: checked.append(schema)
    )
    with pytest.raises(AgentFilesError) as caught:
        load(tmp_path, env={})
    assert checked == []
    assert [(p.line, p.key, p.message) for p in caught.value.problems] == [
        (
            6,
            "tools[0].parameters",
            f"has more than {fields.MAX_SCHEMA_VALUES} values: too big for a tool's parameters",
        )
    ]
    assert not fields._more_values_than({"type": "object", "properties": {}}, 5)
    assert fields._more_values_than({"type": "object", "properties": {}}, 4)
