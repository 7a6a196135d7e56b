"""Unit tests: the package's parts, one folder per part of agent/, with literal inputs."""
