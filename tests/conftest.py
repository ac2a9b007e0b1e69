"""Test configuration: registers the shared fixture modules, and runs the tests marked
`quiet_machine` first.

The AutoRTC gates compare latencies with a golden baseline recorded on a quiet 2-core
machine. Later in a run the session-scoped services of other tests (a LiveKit server,
a dev Omni server, an agent worker with its engine) are still alive and share those
cores, which shifted the speech-to-text time of a turn by up to ~0.5 s. Run first, the
gated tests see the machine the baseline saw.
"""

import pytest

pytest_plugins = ["infra_fixtures", "parity_fixtures", "engine_fixtures", "agent_fixtures"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "quiet_machine: timing-gated; runs before the rest of the session")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker("quiet_machine") is None)  # stable
