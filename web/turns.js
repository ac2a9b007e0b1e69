// Browser-side turn taking: an energy VAD on the microphone decides where the
// user's turn ends (eot), and a latency tracker measures eot -> first agent audio.
// Times are AudioContext seconds, so both signals share one clock.

export const VAD_DEFAULTS = Object.freeze({
  frameS: 0.01, // one level sample per 10 ms
  minThreshold: 0.004, // about -48 dBFS; below this is silence whatever the noise floor
  noiseRatio: 3.0, // speech must be this many times louder than the noise floor
  startFrames: 3, // 30 ms above threshold starts speech
  minSpeechS: 0.15, // shorter bursts are clicks, not turns
  hangoverS: 0.6, // this much silence after speech ends the turn
});

export class EnergyVad {
  constructor(options = {}) {
    this.opts = { ...VAD_DEFAULTS, ...options };
    this.speaking = false;
    this.aboveRun = 0;
    this.noiseFloor = 0.001;
    this.speechStartT = 0;
    this.lastVoicedT = 0;
  }

  threshold() {
    return Math.max(this.opts.minThreshold, this.noiseFloor * this.opts.noiseRatio);
  }

  // Feed one level sample; returns {type: "start"|"eot", t} or null.
  feed(rms, t) {
    const voiced = rms > this.threshold();
    if (!this.speaking) {
      if (voiced) {
        this.aboveRun++;
        if (this.aboveRun >= this.opts.startFrames) {
          this.speaking = true;
          this.speechStartT = t - this.opts.startFrames * this.opts.frameS;
          this.lastVoicedT = t;
          return { type: "start", t: this.speechStartT };
        }
      } else {
        this.aboveRun = 0;
        this.noiseFloor = 0.95 * this.noiseFloor + 0.05 * Math.max(rms, 1e-5);
      }
      return null;
    }
    if (voiced) {
      this.lastVoicedT = t;
      return null;
    }
    if (t - this.lastVoicedT >= this.opts.hangoverS) {
      this.speaking = false;
      this.aboveRun = 0;
      if (this.lastVoicedT - this.speechStartT >= this.opts.minSpeechS) {
        return { type: "eot", t: this.lastVoicedT };
      }
    }
    return null;
  }
}

// Linear-interpolated percentile (numpy's default), q in [0, 100].
export function percentile(values, q) {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const pos = ((sorted.length - 1) * q) / 100;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

export class LatencyTracker {
  constructor({ agentThreshold = 0.003, agentGapS = 0.15, replyTimeoutS = 15 } = {}) {
    this.agentThreshold = agentThreshold;
    this.agentGapS = agentGapS;
    this.replyTimeoutS = replyTimeoutS;
    this.pendingEot = null;
    this.lastAgentAudibleT = -Infinity;
    this.agentAudible = false;
    this.latenciesMs = [];
    this.missed = 0;
  }

  // The user's turn ended at t: wait for the agent's next onset.
  onEot(t) {
    if (this.pendingEot !== null) this.missed++;
    this.pendingEot = t;
  }

  // One level sample of the agent's audio; returns a latency in ms when one completes.
  onAgentLevel(rms, t) {
    if (this.pendingEot !== null && t - this.pendingEot > this.replyTimeoutS) {
      this.missed++;
      this.pendingEot = null;
    }
    const audible = rms > this.agentThreshold;
    let result = null;
    if (audible) {
      const onset = !this.agentAudible && t - this.lastAgentAudibleT >= this.agentGapS;
      if (onset && this.pendingEot !== null && t > this.pendingEot) {
        // t is the end of the 10 ms block that first held agent audio
        result = Math.max(0, (t - 0.01 - this.pendingEot) * 1000);
        this.latenciesMs.push(result);
        this.pendingEot = null;
      }
      this.lastAgentAudibleT = t;
    }
    this.agentAudible = audible;
    return result;
  }

  stats() {
    return {
      count: this.latenciesMs.length,
      p50: percentile(this.latenciesMs, 50),
      p95: percentile(this.latenciesMs, 95),
      last: this.latenciesMs.length ? this.latenciesMs[this.latenciesMs.length - 1] : null,
      missed: this.missed,
    };
  }
}
