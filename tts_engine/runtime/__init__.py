"""The engine's runtime, in the order of the flow: per-request sessions (session.py),
the row pool shared by code generation and decoding (rows.py), the batch stepper
(stepper.py), admission control (admission.py), and the engine's worker loop
(engine.py)."""

from .code_dump import load_codes
from .engine import TTSEngine, check_device_memory
from .session import PCMPacket, RequestMetrics, StreamHandle

__all__ = ["PCMPacket", "RequestMetrics", "StreamHandle", "TTSEngine", "check_device_memory",
           "load_codes"]
