// AudioWorklet: RMS level of its input every 10 ms, stamped with the audio clock.
// Posts {rms, t} where t is the AudioContext time (seconds) at the end of the block.
class LevelMeter extends AudioWorkletProcessor {
  constructor() {
    super();
    this.blockSize = Math.round(sampleRate / 100);
    this.sum = 0;
    this.count = 0;
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel) {
      for (let i = 0; i < channel.length; i++) {
        this.sum += channel[i] * channel[i];
        this.count++;
        if (this.count >= this.blockSize) {
          const t = currentTime + (i + 1) / sampleRate;
          this.port.postMessage({ rms: Math.sqrt(this.sum / this.count), t });
          this.sum = 0;
          this.count = 0;
        }
      }
    }
    return true;
  }
}

registerProcessor("level-meter", LevelMeter);
