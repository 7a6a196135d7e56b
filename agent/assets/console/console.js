// The console page: the softphone's controls, and the calls with their timelines.
// Everything from the server is shown with textContent (never parsed as HTML): transcripts are
// what callers said.

import { Softphone } from "./phone.js";

const $ = (id) => document.getElementById(id);

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  if (!response.ok) throw new Error(`${path}: ${response.status} ${await response.text()}`);
  return response.json();
}

/** Server-sent events over fetch (the same credential as every other request). */
async function* events(path, signal) {
  const response = await fetch(path, { credentials: "same-origin", signal, headers: { Accept: "text/event-stream" } });
  if (!response.ok) throw new Error(`${path}: ${response.status}`);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of block.split("\n")) if (line.startsWith("data: ")) yield JSON.parse(line.slice(6));
    }
  }
}

function line(parent, text, className) {
  const item = document.createElement("div");
  if (className) item.className = className;
  item.textContent = text;
  parent.append(item);
  parent.scrollTop = parent.scrollHeight;
  return item;
}

function describe(event) {
  // One timeline event as a line of text.
  const at = (s) => (s === undefined || s === null ? "" : `${s.toFixed(1)}s `);
  switch (event.type) {
    case "turn": {
      const heard = event.role === "agent" && event.heard !== null && event.heard !== event.said ? ` [heard: ${event.heard}]` : "";
      return `${at(event.start_s)}${event.role}: ${event.said}${heard}${event.interrupted ? " (cut off)" : ""}`;
    }
    case "tool":
      return `${at(event.start_s)}tool ${event.name}(${JSON.stringify(event.arguments)}) -> ${event.outcome} in ${event.latency_ms} ms: ${JSON.stringify(event.result)}`;
    case "barge_in":
      return "barge-in: the caller cut the agent off";
    case "reconnect":
      return "Live API reconnected";
    case "started":
      return `call ${event.call_sid} (${event.agent}) from ${event.from || "unknown"}`;
    case "ended":
      return `ended: ${event.reason} after ${event.duration_s === null ? "?" : event.duration_s.toFixed(1)} s${event.cost_usd ? `, $${event.cost_usd}` : ""}`;
    default:
      return null;
  }
}

/** Follow one call's live timeline into `log` (and the meters); resolves when it ends. */
async function follow(callSid, log, signal, meters) {
  // The call's record may not exist for a moment after the socket opens: retry a 404 briefly.
  for (let attempt = 0; attempt < 40 && !signal.aborted; attempt++) {
    try {
      let speaking = null;
      for await (const event of events(`/console/api/calls/${callSid}/events`, signal)) {
        if (event.type === "level" || event.type === "usage") {
          if (meters) meters(event);
          continue;
        }
        if (event.type === "speaking") {
          if (speaking) speaking.remove();
          speaking = event.text ? line(log, `${event.role}: ${event.text} …`, "partial") : null;
          continue;
        }
        const text = describe(event);
        if (text) {
          if (event.type === "turn" && speaking) {
            speaking.remove();
            speaking = null;
          }
          line(log, text, event.type);
        }
      }
      return;
    } catch (error) {
      if (signal.aborted || !String(error).includes("404")) return;
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }
}

// -- the softphone --------------------------------------------------------------------------

let phone = null;
let following = null;

function showState(state) {
  $("phone-state").textContent = state;
  const inCall = state === "in call" || state === "calling";
  $("call").disabled = inCall;
  $("hang-up").disabled = !inCall;
}

function showLevel(meter, value) {
  meter.value = Math.min(1, value * 2);
}

async function placeCall() {
  showState("calling");
  if (following) following.abort();
  following = null;
  $("transcript").replaceChildren();
  let callSid = null;
  try {
    const issue = async () => {
      const issued = await api("/console/api/calls", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ agent: $("agent").value, caller_id: $("caller-id").value.trim() || null }),
      });
      callSid = issued.call_sid;
      $("call-sid").textContent = callSid;
      return { callSid, ticket: issued.ticket, path: issued.path };
    };
    phone = new Softphone((what, value) => {
      if (what === "state") {
        showState(value);
      } else if (what === "level") {
        if (value.caller !== undefined) showLevel($("mic-level"), value.caller);
        if (value.agent !== undefined) showLevel($("agent-level"), value.agent);
      } else if (what === "received") {
        if (!following) {
          // The agent is on the line, so the call is known to the server: follow its timeline.
          following = new AbortController();
          follow(callSid, $("transcript"), following.signal, null);
        }
        const received = $("received");
        received.dataset.frames = String(Math.round(value.frames));
        received.dataset.peak = value.peak.toFixed(3);
        received.dataset.playedSeconds = value.playedSeconds.toFixed(2);
        received.dataset.playedPeak = value.playedPeak.toFixed(3);
        received.textContent = `${(value.frames / 50).toFixed(1)} s received, ${value.playedSeconds.toFixed(1)} s played`;
      }
    });
    await phone.call(issue);
  } catch (error) {
    showState("failed");
    line($("transcript"), String(error), "error");
  }
}

function hangUp() {
  if (phone) phone.hangUp();
  phone = null;
  showState("ended");
}

// -- the calls ------------------------------------------------------------------------------

let watching = null;

function callRow(call) {
  const row = document.createElement("li");
  const button = document.createElement("button");
  const started = call.started_at ? new Date(call.started_at * 1000).toISOString().slice(11, 19) : "now";
  const place = call.in_progress ? (call.here ? "here" : "another replica") : call.end_reason;
  button.textContent = `${started} ${call.agent || "?"} ${call.from || ""} · ${call.turns} turns · ${place}`;
  button.onclick = () => show(call);
  row.append(button);
  return row;
}

async function refreshCalls() {
  try {
    const calls = await api("/console/api/calls");
    $("active-calls").replaceChildren(...calls.active.map(callRow));
    $("recent-calls").replaceChildren(...calls.recent.map(callRow));
  } catch (error) {
    $("calls-error").textContent = String(error);
  }
}

async function show(call) {
  if (watching) watching.abort();
  watching = new AbortController();
  $("detail-title").textContent = call.call_sid;
  const timeline = $("timeline");
  timeline.replaceChildren();
  $("timeline-picture").replaceChildren();
  $("usage").textContent = "";
  const picture = () => {
    const image = document.createElement("img");
    image.alt = `timeline of ${call.call_sid}`;
    image.src = `/console/api/calls/${call.call_sid}/timeline.svg?t=${Date.now()}`;
    $("timeline-picture").replaceChildren(image);
  };
  if (call.in_progress) {
    await follow(call.call_sid, timeline, watching.signal, (event) => {
      if (event.type === "level") {
        showLevel($("watch-caller-level"), event.caller_dbfs === null ? 0 : Math.pow(10, event.caller_dbfs / 20));
        $("watch-agent-frames").textContent = `${event.agent_frames} frames to the caller`;
      } else {
        const tokens = Object.values(event.tokens).reduce((a, b) => a + b, 0);
        $("usage").textContent = `${tokens} tokens${event.cost_usd === null ? "" : `, $${event.cost_usd.toFixed(4)}`}`;
      }
    });
    if (!watching.signal.aborted) picture();
    return;
  }
  const record = await api(`/console/api/calls/${call.call_sid}`);
  for (const turn of record.turns) line(timeline, describe({ type: "turn", ...turn }), "turn");
  for (const tool of record.tools) line(timeline, describe({ type: "tool", ...tool }), "tool");
  line(timeline, describe({ type: "ended", reason: record.end_reason, duration_s: record.duration_s, cost_usd: record.cost_usd }), "ended");
  const tokens = Object.values(record.tokens).reduce((a, b) => a + b, 0);
  $("usage").textContent = `${tokens} tokens${record.cost_usd === null || record.cost_usd === undefined ? "" : `, $${record.cost_usd}`}`;
  picture();
}

async function start() {
  const { agents } = await api("/console/api/agents");
  $("agent").replaceChildren(
    ...agents.map((agent) => {
      const option = document.createElement("option");
      option.value = agent.name;
      option.textContent = agent.name;
      option.selected = agent.default;
      return option;
    }),
  );
  $("call").onclick = placeCall;
  $("hang-up").onclick = hangUp;
  for (const key of document.querySelectorAll("[data-digit]")) key.onclick = () => phone && phone.press(key.dataset.digit);
  showState("idle");
  refreshCalls();
  setInterval(refreshCalls, 2000);
}

start();
