// The softphone's audio, on the audio thread (AudioWorklet): no build step, no dependencies.
//
// "capture": the microphone at the context's rate (48 kHz, 44.1 kHz, ...) to 8 kHz mu-law in
//   20 ms frames (160 bytes), what a phone call carries: low-passed below 3.6 kHz (a windowed
//   sinc) and sampled at the 8 kHz instants by linear interpolation between the filtered samples.
// "player": the agent's 8 kHz audio to the context's rate, behind a small jitter buffer (it
//   starts a turn once 60 ms are queued, or at once when a mark says the chunk is complete), and
//   the marks: each is reported once the audio queued before it has been played; "clear" drops
//   the queue and reports every pending mark, as Twilio does.

const PHONE_RATE = 8000;
const FRAME = 160; // 20 ms at 8 kHz
const PREBUFFER = 480; // 60 ms at 8 kHz

function ulawEncode(sample) {
  // G.711 mu-law of one sample in [-1, 1].
  let s = Math.max(-1, Math.min(1, sample)) * 32767;
  const sign = s < 0 ? 0x80 : 0;
  s = Math.min(Math.abs(s), 32635) + 0x84;
  let exponent = 7;
  for (let mask = 0x4000; (s & mask) === 0 && exponent > 0; mask >>= 1) exponent--;
  const mantissa = (s >> (exponent + 3)) & 0x0f;
  return ~(sign | (exponent << 4) | mantissa) & 0xff;
}

function lowPass(rate, cutoff, taps) {
  // A windowed-sinc FIR (Blackman), normalised to unit gain at DC.
  const h = new Float32Array(taps);
  const mid = (taps - 1) / 2;
  let sum = 0;
  for (let i = 0; i < taps; i++) {
    const t = i - mid;
    const sinc = t === 0 ? 1 : Math.sin((2 * Math.PI * cutoff * t) / rate) / ((2 * Math.PI * cutoff * t) / rate);
    const w = 0.42 - 0.5 * Math.cos((2 * Math.PI * i) / (taps - 1)) + 0.08 * Math.cos((4 * Math.PI * i) / (taps - 1));
    h[i] = sinc * w;
    sum += h[i];
  }
  for (let i = 0; i < taps; i++) h[i] /= sum;
  return h;
}

class Capture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / PHONE_RATE; // input samples per output sample
    this.filter = lowPass(sampleRate, 3600, 63);
    this.history = new Float32Array(this.filter.length); // ring of the newest input samples
    this.pos = 0; // write position in the ring
    this.previous = 0; // the filtered sample before the newest
    this.phase = 0; // where the next 8 kHz instant falls, in input samples from the newest
    this.frame = new Uint8Array(FRAME);
    this.filled = 0;
    this.peak = 0;
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true;
    const h = this.filter;
    const n = h.length;
    for (let i = 0; i < channel.length; i++) {
      this.history[this.pos] = channel[i];
      this.pos = (this.pos + 1) % n;
      let filtered = 0;
      for (let k = 0, j = this.pos; k < n; k++, j = (j + 1) % n) filtered += h[k] * this.history[j];
      // 8 kHz instants between the previous filtered sample and this one.
      this.phase -= 1;
      while (this.phase <= 0) {
        const frac = 1 + this.phase; // 0: the previous sample, 1: this one
        const value = this.previous + (filtered - this.previous) * frac;
        this.peak = Math.max(this.peak, Math.abs(value));
        this.frame[this.filled++] = ulawEncode(value);
        if (this.filled === FRAME) {
          this.port.postMessage({ frame: this.frame.buffer, peak: this.peak }, [this.frame.buffer]);
          this.frame = new Uint8Array(FRAME);
          this.filled = 0;
          this.peak = 0;
        }
        this.phase += this.step;
      }
      this.previous = filtered;
    }
    return true;
  }
}

class Player extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = PHONE_RATE / sampleRate; // 8 kHz samples per output sample
    this.chunks = []; // Float32Array chunks at 8 kHz
    this.offset = 0; // read position in chunks[0]
    this.queued = 0; // 8 kHz samples queued
    this.enqueued = 0; // 8 kHz samples ever queued
    this.played = 0; // 8 kHz samples ever played (or dropped by a clear)
    this.marks = []; // [{name, at}] in order, at = enqueued when the mark came
    this.playing = false;
    this.frac = 0;
    this.last = 0;
    this.levelPeak = 0; // the output's peak since the last level report
    this.levelFrames = 0;
    this.port.onmessage = (event) => this.receive(event.data);
  }

  receive(message) {
    if (message.audio) {
      const samples = new Float32Array(message.audio);
      this.chunks.push(samples);
      this.queued += samples.length;
      this.enqueued += samples.length;
    } else if (message.mark !== undefined) {
      this.marks.push({ name: message.mark, at: this.enqueued });
      this.playing = true; // the chunk before a mark is complete: no reason to wait for more
    } else if (message.clear) {
      this.chunks = [];
      this.offset = 0;
      this.played += this.queued;
      this.queued = 0;
      this.playing = false;
      this.reportMarks();
    }
  }

  reportMarks() {
    while (this.marks.length && this.marks[0].at <= this.played) {
      this.port.postMessage({ played: this.marks.shift().name });
    }
  }

  next() {
    // The next 8 kHz sample, or null when the queue is empty.
    while (this.chunks.length && this.offset >= this.chunks[0].length) {
      this.chunks.shift();
      this.offset = 0;
    }
    if (!this.chunks.length) return null;
    this.queued--;
    this.played++;
    return this.chunks[0][this.offset++];
  }

  process(_inputs, outputs) {
    const out = outputs[0][0];
    if (!this.playing && this.queued >= PREBUFFER) this.playing = true;
    let peak = 0;
    for (let i = 0; i < out.length; i++) {
      if (!this.playing) {
        out[i] = 0;
        continue;
      }
      this.frac += this.step;
      while (this.frac >= 1) {
        const sample = this.next();
        if (sample === null) {
          this.playing = false; // an underrun: wait for the buffer to fill again
          break;
        }
        this.last = sample;
        this.frac -= 1;
      }
      out[i] = this.playing ? this.last : 0;
      peak = Math.max(peak, Math.abs(out[i]));
    }
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    this.reportMarks();
    // The output level, ten times a second (the page's meter, and the tests' proof of sound).
    this.levelPeak = Math.max(this.levelPeak, peak);
    this.levelFrames += out.length;
    if (this.levelFrames >= sampleRate / 10) {
      this.port.postMessage({ level: this.levelPeak, seconds: this.levelFrames / sampleRate });
      this.levelPeak = 0;
      this.levelFrames = 0;
    }
    return true;
  }
}

registerProcessor("capture", Capture);
registerProcessor("player", Player);
