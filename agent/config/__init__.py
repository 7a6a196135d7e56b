"""Agent configuration, one idea per module: :mod:`~agent.config.fields` (validated field types),
:mod:`~agent.config.models` (the agent and its file), :mod:`~agent.config.tools` (tool specs),
:mod:`~agent.config.loader` (YAML with line numbers, ``${AGENT_…}``, problems),
:mod:`~agent.config.limits` (size, alias and depth limits while composing),
:mod:`~agent.config.registry` (which agent answers which number),
:mod:`~agent.config.reload` (SIGHUP and file-change reload), :mod:`~agent.config.templates`
(prompts rendered per call) and :mod:`~agent.config.schema` (JSON Schema, README tables)."""
