"""Test configuration: registers the shared fixture modules."""

pytest_plugins = ["infra_fixtures", "parity_fixtures", "engine_fixtures", "agent_fixtures"]
