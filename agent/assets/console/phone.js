// The softphone: the microphone to the bridge and the agent to the speaker, over the console's
// own media-stream protocol (docs/console.md), 8 kHz mu-law in 20 ms frames as on the phone.

const MU_LAW = (() => {
  // G.711 mu-law decoding table, to [-1, 1].
  const table = new Float32Array(256);
  for (let i = 0; i < 256; i++) {
    const u = ~i & 0xff;
    const exponent = (u >> 4) & 0x07;
    const magnitude = ((((u & 0x0f) << 3) + 0x84) << exponent) - 0x84;
    table[i] = ((u & 0x80) ? -magnitude : magnitude) / 32768;
  }
  return table;
})();

function toBase64(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; i++) text += String.fromCharCode(bytes[i]);
  return btoa(text);
}

function fromBase64(text) {
  const raw = atob(text);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

/** One call from the page. `on` receives "state", "level" and "received" updates. */
export class Softphone {
  constructor(on) {
    this.on = on;
    this.ws = null;
    this.context = null;
    this.microphone = null;
    this.received = { frames: 0, peak: 0, playedSeconds: 0, playedPeak: 0 };
  }

  /** Place a call. `issue()` asks the server for it (POST /console/api/calls: the call SID and
   * its one-use ticket), once the microphone is granted: the ticket lasts a minute, and a
   * person may take longer than that to answer the browser's permission prompt. */
  async call(issue) {
    this.microphone = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, channelCount: 1 },
    });
    const { callSid, ticket, path } = await issue();
    this.context = new AudioContext();
    await this.context.audioWorklet.addModule("/console/assets/audio-worklet.js");
    const source = this.context.createMediaStreamSource(this.microphone);
    const capture = new AudioWorkletNode(this.context, "capture");
    this.player = new AudioWorkletNode(this.context, "player", { outputChannelCount: [1] });
    source.connect(capture);
    this.player.connect(this.context.destination);
    await this.context.resume();

    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}${path}`);
    this.ws = ws;
    ws.onopen = () => {
      // The ticket goes in the first message, not the URL: URLs end up in access logs.
      ws.send(JSON.stringify({
        event: "start",
        callSid,
        ticket,
        mediaFormat: { encoding: "audio/x-mulaw", sampleRate: 8000, channels: 1 },
      }));
      this.on("state", "in call");
      capture.port.onmessage = ({ data }) => {
        if (ws.readyState !== WebSocket.OPEN) return;
        ws.send(`{"event":"media","payload":"${toBase64(new Uint8Array(data.frame))}"}`);
        this.on("level", { caller: data.peak });
      };
    };
    ws.onmessage = ({ data }) => this.receive(JSON.parse(data));
    ws.onclose = () => this.ended();
    this.player.port.onmessage = ({ data }) => {
      if (data.played !== undefined) {
        // Twilio's mark echo: the bridge learns what the caller has heard.
        if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ event: "mark", name: data.played }));
      } else if (data.level !== undefined) {
        this.received.playedSeconds += data.seconds;
        this.received.playedPeak = Math.max(this.received.playedPeak, data.level);
        this.on("level", { agent: data.level });
        this.on("received", this.received);
      }
    };
    return callSid;
  }

  receive(message) {
    if (message.event === "media") {
      const bytes = fromBase64(message.payload);
      const samples = new Float32Array(bytes.length);
      let peak = 0;
      for (let i = 0; i < bytes.length; i++) {
        samples[i] = MU_LAW[bytes[i]];
        peak = Math.max(peak, Math.abs(samples[i]));
      }
      this.received.frames += bytes.length / 160;
      this.received.peak = Math.max(this.received.peak, peak);
      this.player.port.postMessage({ audio: samples.buffer }, [samples.buffer]);
      this.on("received", this.received);
    } else if (message.event === "mark") {
      this.player.port.postMessage({ mark: message.name });
    } else if (message.event === "clear") {
      this.player.port.postMessage({ clear: true }); // barge-in: the agent stops at once
    }
  }

  /** Send a keypad digit. */
  press(digit) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({ event: "dtmf", digit }));
  }

  hangUp() {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send('{"event":"stop"}');
      this.ws.close(1000);
    }
    this.ended();
  }

  ended() {
    if (this.microphone) this.microphone.getTracks().forEach((track) => track.stop());
    if (this.context) this.context.close();
    this.microphone = null;
    this.context = null;
    if (this.ws) {
      this.ws = null;
      this.on("state", "ended");
    }
  }
}
