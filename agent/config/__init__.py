"""Agent configuration: the models an agent file is validated into, the YAML loader, the
registry of agents and its reload."""
