"""What the tests import or run: the real services on loopback for the integration tests
(infra, agent_worker, tts_server, lk_bots, and the scripts engine_probe and vllm_standin),
the fakes of the agent's seams for the unit tests (fake_engine, fake_omni, fake_room), and
the official implementation's drivers (parity/) and the browser's (browser/)."""
