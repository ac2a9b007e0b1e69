// streamtalk browser client: join a room through the token server, publish the
// microphone, play the agent, show its transcripts and state, measure latency.
import { EnergyVad, LatencyTracker } from "./turns.js";
import { LATENCY_TOPIC, parseTurnLatency, scaleBars, turnBar } from "./turn_latency.js";

const LK = globalThis.LivekitClient;
const AGENT_STATE_ATTR = "lk.agent.state";
const DUPLEX_ATTR = "streamtalk.duplex";
const RECONCILER_KEY = "streamtalk.agent";
// "ok", "down: <component>: <why>", or "busy: tts: <why>" (the TTS engine has no room)
const BACKEND_ATTR = "streamtalk.backend";
const BUSY_NOTICE =
  "The agent's voice is busy (its GPU is full): replies are shown as text until there is room.";
const TRANSCRIPTION_TOPIC = "lk.transcription";
const STOP_RPC = "stop_reply";
// what the page shows for each duplex state: a paused reply is not (yet) an interrupted one
const DUPLEX_LABELS = {
  LISTENING: "listening",
  THINKING: "thinking",
  SPEAKING: "speaking",
  INTERRUPTING: "interrupting",
  PAUSED: "paused (deciding on a barge-in)",
};

const $ = (id) => document.getElementById(id);

// Everything a person (or a test) may want to read, in one place.
const state = {
  connection: "disconnected",
  identity: null,
  room: null,
  micPublished: false,
  agentIdentity: null,
  agentName: null,
  agentState: null,
  duplexState: null,
  backendState: null,
  agentAudioTracks: 0,
  userTurns: 0,
  latenciesMs: [],
  turnLatencies: [], // the agent's per-turn breakdowns {turn, segments: [[stage, ms]...], totalMs}
  stats: null,
  transcripts: [],
  stopResults: [],
  errors: [],
  notice: "", // the notice shown now, and every notice shown so far in order
  notices: [],
  events: [], // recent turn events {type: speech_start|eot|agent_onset|latency, t} (AudioContext s)
};

function noteEvent(type, t, extra = {}) {
  state.events.push({ type, t: Math.round(t * 1000) / 1000, ...extra });
  if (state.events.length > 200) state.events.shift();
}

let room = null;
let audioCtx = null;
let workletReady = null;
let vad = new EnergyVad();
let tracker = new LatencyTracker();
const segments = new Map(); // segment id -> <li>

// ------------------------------------------------------------------ messages

function showError(message) {
  state.errors.push(message);
  const el = $("error");
  el.textContent = message;
  el.hidden = false;
  console.error("[streamtalk]", message);
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

function showNotice(message) {
  if (message && message !== state.notice) state.notices.push(message);
  state.notice = message;
  const el = $("notice");
  el.textContent = message;
  el.hidden = !message;
}

function setConnection(value, cls = "") {
  state.connection = value;
  const el = $("conn-state");
  el.textContent = value;
  el.className = `pill ${cls}`;
}

function describeConnectError(err, url) {
  const R = LK.ConnectionErrorReason || {};
  const reason = err && err.reason;
  // never echo a token into the page
  const detail = ((err && err.message) || String(err)).replace(/eyJ[\w-]+\.[\w-]+\.[\w-]+/g, "<token>");
  if (reason === R.NotAllowed) {
    return (
      `The LiveKit server at ${url} refused the token (${detail}). ` +
      "The token server's LIVEKIT_API_KEY/LIVEKIT_API_SECRET must match the LiveKit server's keys, " +
      "and the token must not have expired."
    );
  }
  if (reason === R.ServerUnreachable || reason === R.WebSocket || reason === R.Timeout) {
    return (
      `Cannot reach the LiveKit server at ${url} (${detail}). ` +
      "Is it running, and is that address reachable from this browser?"
    );
  }
  return `Could not join the room on ${url}: ${detail}`;
}

function describeMicError(err) {
  const name = (err && err.name) || "";
  if (!window.isSecureContext || !navigator.mediaDevices) {
    return (
      "The microphone needs a secure page: open it over https:// (or on http://localhost). " +
      "See docs/INFRA.md for TLS."
    );
  }
  if (name === "NotAllowedError" || name === "SecurityError") {
    return "Microphone permission was denied. Allow microphone access for this site and connect again.";
  }
  if (name === "NotFoundError" || name === "OverconstrainedError") {
    return "No microphone was found. Plug one in (or pick another input) and connect again.";
  }
  if (name === "NotReadableError") {
    return "The microphone is in use by another application or could not be opened.";
  }
  return `The microphone could not be started: ${(err && err.message) || err}`;
}

// ------------------------------------------------------------------ audio analysis

async function ensureAudioContext() {
  if (!audioCtx) {
    audioCtx = new AudioContext({ latencyHint: "interactive" });
    workletReady = audioCtx.audioWorklet.addModule("level-worklet.js");
  }
  if (audioCtx.state === "suspended") await audioCtx.resume();
  await workletReady;
  return audioCtx;
}

async function meterTrack(mediaStreamTrack, onLevel) {
  const ctx = await ensureAudioContext();
  const source = ctx.createMediaStreamSource(new MediaStream([mediaStreamTrack]));
  const meter = new AudioWorkletNode(ctx, "level-meter", { numberOfOutputs: 1 });
  meter.port.onmessage = (ev) => onLevel(ev.data.rms, ev.data.t);
  source.connect(meter);
  meter.connect(ctx.destination); // outputs silence; keeps the node pulled
  return () => {
    source.disconnect();
    meter.disconnect();
  };
}

function onMicLevel(rms, t) {
  $("mic-level").value = Math.min(1, rms * 5);
  const ev = vad.feed(rms, t);
  if (!ev) return;
  noteEvent(ev.type === "start" ? "speech_start" : "eot", ev.t);
  if (ev.type === "start") {
    $("vad-state").textContent = "speaking";
    $("vad-state").className = "speaking";
  } else if (ev.type === "eot") {
    state.userTurns++;
    $("vad-state").textContent = "silent (end of turn)";
    $("vad-state").className = "";
    tracker.onEot(ev.t);
  }
}

function onAgentLevel(rms, t) {
  const wasAudible = tracker.agentAudible;
  const latency = tracker.onAgentLevel(rms, t);
  if (!wasAudible && tracker.agentAudible) noteEvent("agent_audible", t);
  if (latency !== null) {
    noteEvent("latency", t, { ms: Math.round(latency) });
    renderLatency(latency);
  }
  else if (tracker.missed !== (state.stats && state.stats.missed)) renderStats();
}

function fmtMs(v) {
  return v === null || v === undefined ? "-" : `${Math.round(v)} ms`;
}

function renderStats() {
  const s = tracker.stats();
  state.stats = s;
  state.latenciesMs = [...tracker.latenciesMs];
  $("lat-count").textContent = String(s.count);
  $("lat-last").textContent = fmtMs(s.last);
  $("lat-p50").textContent = fmtMs(s.p50);
  $("lat-p95").textContent = fmtMs(s.p95);
  $("lat-missed").textContent = String(s.missed);
}

function renderLatency(latencyMs) {
  renderStats();
  const li = document.createElement("li");
  li.textContent = fmtMs(latencyMs);
  $("lat-list").appendChild(li);
}

// ------------------------------------------------------------------ agent

function isAgent(p) {
  const attrs = p.attributes || {};
  return Boolean(p.isAgent) || AGENT_STATE_ATTR in attrs || DUPLEX_ATTR in attrs;
}

function findAgent() {
  if (!room) return null;
  for (const p of room.remoteParticipants.values()) if (isAgent(p)) return p;
  return null;
}

function renderAgent() {
  const agent = findAgent();
  state.agentIdentity = agent ? agent.identity : null;
  state.agentName = agent ? agent.name || agent.identity : null;
  state.agentState = agent ? agent.attributes[AGENT_STATE_ATTR] || null : null;
  state.duplexState = agent ? agent.attributes[DUPLEX_ATTR] || null : null;
  state.backendState = agent ? agent.attributes[BACKEND_ATTR] || null : null;
  $("agent-name").textContent = agent ? state.agentName : "none yet";
  $("agent-name").title = agent ? agent.identity : "";
  $("agent-state").textContent = state.agentState || "-";
  $("duplex-state").textContent = DUPLEX_LABELS[state.duplexState] || state.duplexState || "-";
  $("duplex-state").dataset.state = state.duplexState || "";
  $("backend-state").textContent = state.backendState || "-";
  const backend = state.backendState || "";
  $("backend-state").className =
    backend.startsWith("down") ? "bad" : backend.startsWith("busy") ? "busy" : "";
  $("stop").disabled = !agent;
  showNotice(agentNotice(agent));
}

// The token server's room reconciler says in the room metadata when it re-dispatches
// the agent (token_server/reconciler.py).
function reconcilerStatus() {
  try {
    const meta = JSON.parse((room && room.metadata) || "{}");
    return (meta && meta[RECONCILER_KEY]) || {};
  } catch {
    return {};
  }
}

function agentNotice(agent) {
  if (!room || room.state !== "connected") return "";
  const status = reconcilerStatus();
  if (agent && (state.backendState || "").startsWith("busy")) return BUSY_NOTICE;
  if (agent) return status.state === "back" ? "The agent is back." : "";
  if (status.state === "reconnecting") return `The agent left; reconnecting the agent (attempt ${status.attempt})...`;
  if (status.state === "lost") return "The agent left and could not be brought back. Leave and join again.";
  return "Connected. Waiting for the agent to join the room...";
}

async function stopReply() {
  const agent = findAgent();
  if (!agent || !room) return;
  $("stop-result").textContent = "stopping...";
  try {
    const response = await room.localParticipant.performRpc({
      destinationIdentity: agent.identity,
      method: STOP_RPC,
      payload: JSON.stringify({ reason: "stop_button" }),
      responseTimeout: 5000,
    });
    state.stopResults.push({ ok: true, response });
    $("stop-result").textContent = `stopped (${response || "ok"})`;
  } catch (err) {
    const message = (err && err.message) || String(err);
    state.stopResults.push({ ok: false, error: message });
    $("stop-result").textContent = `stop failed: ${message}`;
  }
}

function onData(payload, participant, _kind, topic) {
  if (topic !== LATENCY_TOPIC || !participant || !isAgent(participant)) return; // the agent's only
  let breakdown;
  try {
    breakdown = parseTurnLatency(payload);
  } catch (err) {
    console.warn("[streamtalk] ignored a latency packet from", participant && participant.identity, err.message);
    return;
  }
  state.turnLatencies.push(breakdown);
  if (state.turnLatencies.length > 50) state.turnLatencies.shift();
  const list = $("turn-bars");
  list.prepend(turnBar(breakdown)); // newest first
  while (list.children.length > 10) list.lastElementChild.remove();
  scaleBars(list);
}

// ------------------------------------------------------------------ transcripts

async function onTranscription(reader, participantInfo) {
  const attrs = reader.info.attributes || {};
  const segmentId = attrs["lk.segment_id"] || reader.info.id;
  const who = participantInfo.identity === state.identity ? "you" : participantInfo.identity;
  let li = segments.get(segmentId);
  if (!li) {
    li = document.createElement("li");
    li.innerHTML = '<span class="who"></span><span class="text"></span>';
    li.querySelector(".who").textContent = who;
    segments.set(segmentId, li);
    $("transcript").appendChild(li);
  }
  li.className = who === "you" ? "user" : "agent";
  const entry = { segmentId, who, text: "", final: false };
  const textEl = li.querySelector(".text");
  textEl.textContent = ""; // each stream carries the whole segment (interim) or its deltas
  try {
    for await (const chunk of reader) {
      entry.text += chunk;
      textEl.textContent = entry.text;
      $("transcript").scrollTop = $("transcript").scrollHeight;
    }
  } catch (err) {
    console.warn("[streamtalk] transcription stream ended early", err);
  }
  // A reply streams its deltas under lk.transcription_final="false" and says "true" in the
  // stream's trailer, which the SDK merges into reader.info.attributes when the stream ends.
  const endAttrs = reader.info.attributes || {};
  entry.final = endAttrs["lk.transcription_final"] !== "false";
  li.classList.toggle("interim", !entry.final);
  const prev = state.transcripts.findIndex((t) => t.segmentId === segmentId);
  if (prev >= 0) state.transcripts[prev] = entry;
  else state.transcripts.push(entry);
}

// ------------------------------------------------------------------ room

// The server chooses the identity (user-guest-<random>) and, for an empty room field, a new
// random room; the answer names both.
async function fetchToken(roomName, name) {
  const headers = { "Content-Type": "application/json" };
  const key = $("access-key").value;
  if (key) headers["X-Access-Key"] = key;
  let resp;
  try {
    resp = await fetch("/api/token", {
      method: "POST",
      headers,
      body: JSON.stringify({ room: roomName || undefined, name: name || undefined }),
    });
  } catch (err) {
    throw new Error(`Cannot reach the token server (${err.message}). Is it running?`);
  }
  let body = null;
  try {
    body = await resp.json();
  } catch {
    body = null;
  }
  if (!resp.ok) {
    const msg = body && body.error ? body.error.message : `HTTP ${resp.status}`;
    if (resp.status === 401) {
      $("access-key-row").hidden = false;
      throw new Error(`The token server refused the request: ${msg}. Enter the access key and retry.`);
    }
    throw new Error(`The token server refused the request: ${msg}`);
  }
  return body;
}

function wireRoom(r) {
  r.on(LK.RoomEvent.ParticipantConnected, renderAgent);
  r.on(LK.RoomEvent.ParticipantDisconnected, renderAgent);
  r.on(LK.RoomEvent.ParticipantAttributesChanged, renderAgent);
  r.on(LK.RoomEvent.RoomMetadataChanged, renderAgent);
  r.on(LK.RoomEvent.DataReceived, onData);
  r.on(LK.RoomEvent.TrackSubscribed, (track, _pub, participant) => {
    if (track.kind !== LK.Track.Kind.Audio) return;
    const el = track.attach();
    el.dataset.participant = participant.identity;
    $("audio-sink").appendChild(el);
    if (isAgent(participant) || !findAgent()) {
      state.agentAudioTracks++;
      meterTrack(track.mediaStreamTrack, onAgentLevel).catch((err) =>
        console.warn("[streamtalk] cannot meter agent audio", err),
      );
    }
    renderAgent();
  });
  r.on(LK.RoomEvent.TrackUnsubscribed, (track) => track.detach().forEach((el) => el.remove()));
  r.on(LK.RoomEvent.AudioPlaybackStatusChanged, () => {
    $("enable-audio").hidden = r.canPlaybackAudio;
  });
  r.on(LK.RoomEvent.MediaDevicesError, (err) => showError(describeMicError(err)));
  r.on(LK.RoomEvent.Reconnecting, () => setConnection("reconnecting"));
  r.on(LK.RoomEvent.Reconnected, () => setConnection("connected", "connected"));
  r.on(LK.RoomEvent.Disconnected, (reason) => {
    const expected = state.connection === "disconnecting";
    setConnection("disconnected");
    state.micPublished = false;
    $("mic-state").textContent = "off";
    $("connect").disabled = false;
    $("disconnect").disabled = true;
    $("stop").disabled = true;
    if (!expected) {
      const names = LK.DisconnectReason || {};
      const label = Object.keys(names).find((k) => names[k] === reason) || reason;
      showError(`Disconnected from the LiveKit server (reason: ${label}).`);
    }
  });
  r.registerTextStreamHandler(TRANSCRIPTION_TOPIC, (reader, info) => {
    onTranscription(reader, info);
  });
}

async function connect(event) {
  event.preventDefault();
  clearError();
  if (!LK) {
    showError(
      "The LiveKit client library did not load (/vendor/livekit-client.umd.js). " +
        "On the server, run scripts/install_node_deps.sh and restart the token server.",
    );
    return;
  }
  const roomName = $("room").value.trim();
  if (roomName && !/^[A-Za-z0-9_-]{1,64}$/.test(roomName)) {
    showError("Room names are 1-64 characters of letters, digits, '_' and '-' (empty: a new random room).");
    return;
  }
  $("connect").disabled = true;
  setConnection("requesting token");
  vad = new EnergyVad();
  tracker = new LatencyTracker();
  renderStats();
  // created inside the click handler so the browser lets it play
  try {
    await ensureAudioContext();
  } catch (err) {
    console.warn("[streamtalk] audio analysis unavailable", err);
  }

  let grant;
  try {
    grant = await fetchToken(roomName, $("display-name").value.trim());
  } catch (err) {
    setConnection("failed", "failed");
    showError(err.message);
    $("connect").disabled = false;
    return;
  }
  state.identity = grant.identity;
  state.room = grant.room;
  $("room").value = grant.room; // a random room: shown so that others can be invited to it

  room = new LK.Room({
    adaptiveStream: false,
    dynacast: false,
    audioCaptureDefaults: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
  });
  wireRoom(room);
  setConnection("connecting");
  try {
    await room.connect(grant.url, grant.token, { autoSubscribe: true });
  } catch (err) {
    setConnection("failed", "failed");
    showError(describeConnectError(err, grant.url));
    $("connect").disabled = false;
    room = null;
    return;
  }
  setConnection("connected", "connected");
  $("disconnect").disabled = false;
  $("enable-audio").hidden = room.canPlaybackAudio;
  renderAgent();

  try {
    const pub = await room.localParticipant.setMicrophoneEnabled(true, {
      echoCancellation: true,
      noiseSuppression: true,
      autoGainControl: true,
    });
    if (!pub || !pub.track) throw new Error("no microphone track was published");
    state.micPublished = true;
    $("mic-state").textContent = "on (echo cancellation)";
    await meterTrack(pub.track.mediaStreamTrack, onMicLevel).catch((err) =>
      console.warn("[streamtalk] cannot meter the microphone", err),
    );
  } catch (err) {
    $("mic-state").textContent = "unavailable";
    showError(describeMicError(err));
  }
}

async function disconnect() {
  if (!room) return;
  setConnection("disconnecting");
  await room.disconnect();
  room = null;
  renderAgent();
}

function init() {
  const params = new URLSearchParams(location.search);
  if (params.get("room")) $("room").value = params.get("room");
  if (params.get("name")) $("display-name").value = params.get("name");
  $("join-form").addEventListener("submit", connect);
  $("disconnect").addEventListener("click", disconnect);
  $("stop").addEventListener("click", stopReply);
  $("enable-audio").addEventListener("click", () => room && room.startAudio());
  fetch("/api/config")
    .then((r) => (r.ok ? r.json() : null))
    .then((cfg) => {
      if (cfg && cfg.access_key_required) $("access-key-row").hidden = false;
    })
    .catch(() => showError("Cannot reach the token server (/api/config). Is it running?"));
  if (!LK) {
    showError(
      "The LiveKit client library did not load (/vendor/livekit-client.umd.js). " +
        "On the server, run scripts/install_node_deps.sh and restart the token server.",
    );
    $("connect").disabled = true;
  }
}

window.streamtalk = {
  state,
  snapshot: () => JSON.parse(JSON.stringify({ ...state, stats: tracker.stats() })),
};
init();
