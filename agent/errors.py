"""Every error the agent raises to a caller, as one hierarchy.

    AgentError
    ├── AgentConfigError     a setting has a value the agent cannot run with (also the shared
    │                        streamtalk_common ConfigError, a ValueError)
    ├── BackendError         the Omni backend failed; `status` (HTTP, if any) and `retryable`
    ├── HistoryFormatError   the room metadata's history is not the shape agent/history.py writes
    └── TraceFormatError     a trace file line is not a trace point (agent/trace_summary.py)

The engine's own errors, which the TTS plugin sees, are tts_engine/errors.py's.
"""

from __future__ import annotations

from streamtalk_common.errors import ConfigError


class AgentError(Exception):
    pass


class AgentConfigError(AgentError, ConfigError):
    pass


class BackendError(AgentError):
    """`retryable`: the backend may come back by itself (down, overloaded, slow), as opposed
    to a request that is wrong (4xx)."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = True) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class HistoryFormatError(AgentError, ValueError):
    pass


class TraceFormatError(AgentError, ValueError):
    pass
