// The agent's per-turn latency breakdown (data topic "streamtalk.latency"): parse a packet
// and draw it as one bar whose segments are the turn's stages, in the order the agent sends
// them (streamtalk_common/latency_breakdown.py: stt, llm, tts, publish).

export const LATENCY_TOPIC = "streamtalk.latency";

// The breakdown in a packet's bytes, or throws an Error that says what is wrong.
export function parseTurnLatency(bytes) {
  const msg = JSON.parse(new TextDecoder().decode(bytes));
  if (!msg || msg.type !== "turn_latency") throw new Error(`not a turn_latency packet: ${msg && msg.type}`);
  if (!Number.isInteger(msg.turn)) throw new Error(`turn must be an integer, got ${msg.turn}`);
  const segments = Object.entries(msg.segments_ms || {});
  if (!segments.length || segments.some(([, ms]) => typeof ms !== "number" || !Number.isFinite(ms))) {
    throw new Error("segments_ms must map each stage to a number of ms");
  }
  const totalMs = segments.reduce((sum, [, ms]) => sum + ms, 0);
  return { turn: msg.turn, segments, totalMs };
}

const ms = (v) => `${Math.round(v)} ms`;

// One <li>: the bar (segment widths in proportion to their share of the turn) and the labels.
export function turnBar(breakdown) {
  const li = document.createElement("li");
  li.dataset.turn = String(breakdown.turn);
  li.dataset.totalMs = String(breakdown.totalMs);
  const bar = document.createElement("div");
  bar.className = "turn-bar";
  const labels = document.createElement("div");
  labels.className = "turn-labels";
  const total = Math.max(breakdown.totalMs, 1);
  breakdown.segments.forEach(([name, value], i) => {
    const seg = document.createElement("span");
    seg.className = `seg seg-${i % 4}`;
    seg.style.flexGrow = String(Math.max(value, 0) / total);
    seg.title = `${name} ${ms(value)}`;
    bar.appendChild(seg);
    const label = document.createElement("span");
    label.className = `seg-label seg-${i % 4}`;
    label.textContent = `${name} ${ms(value)}`;
    labels.appendChild(label);
  });
  const head = document.createElement("span");
  head.className = "turn-head";
  head.textContent = `turn ${breakdown.turn}: ${ms(breakdown.totalMs)}`;
  li.append(head, bar, labels);
  return li;
}

// Bars of one list share a scale: the slowest turn shown spans the whole width.
export function scaleBars(list) {
  const items = [...list.children];
  const longest = Math.max(1, ...items.map((li) => Number(li.dataset.totalMs)));
  for (const li of items) {
    li.querySelector(".turn-bar").style.width = `${(100 * Math.max(Number(li.dataset.totalMs), 0)) / longest}%`;
  }
}
