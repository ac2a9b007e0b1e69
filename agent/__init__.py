"""streamtalk voice agent: a LiveKit worker with local VAD, Omni STT/LLM and the embedded TTS.

One concern per module:

- `config`        AgentConfig (process-wide, from env) and RoomSettings (per room, from
                  dispatch metadata over env)
- `worker`        the AgentServer: shared engine + VAD loaded before the first job,
                  thread job executor, explicit dispatch as `streamtalk`
- `engine_service` the one TTSEngine and Silero VAD of the worker process
- `omni_client`   OpenAI-compatible HTTP client (chat SSE, transcriptions): timeouts, retries
- `stt`, `llm`, `tts`  LiveKit plugins over Omni and the engine
- `bridge`        LLM tokens -> TTS segments (pure logic)
- `text_clean`    text made speakable (markdown, emoji, URLs, numbers)
- `gpu_scheduler` fast/slow lanes in front of the shared engine
- `duplex`        LISTENING/THINKING/SPEAKING/INTERRUPTING/PAUSED state machine (pure logic)
- `duplex_controller` drives the machine from live events; the barge-in cancel cascade
- `events`        the per-room event bus the observers watch
- `trace`         nine-point turn traces as JSONL; `trace_summary` prints P50/P95
- `latency_publisher` each turn's latency breakdown to the room (data topic)
- `bench_stt`     STT latency of an Omni backend through the agent's path (table + JSON)
- `audio_output`  the room audio sink (20 ms frames) with taps (first audio, pre_rtc)
- `autortc`       AutoRTC data protocol, agent side; `pre_rtc` recorder
- `room_agent`    one room's wiring: session, duplex controller, RPC, status
- `room_rpc`      the room's RPC methods, withdrawn before the room is left
- `allocator`     the worker's malloc policy (arena cap, free pages back at room end)
- `heap_report`   opt-in memory reports (RSS, malloc, Python objects) for soaks

See docs/AGENT.md.
"""

AGENT_NAME_DEFAULT = "streamtalk"
