// The web page of `speech serve`: microphone -> AudioWorklet -> WebSocket (f32le at the AudioContext's rate;
// the server resamples) -> live captions. `window.speechLog` keeps every server message; with `?record=1`
// `window.speechSent` also keeps a copy of every audio frame sent (end-to-end tests compare against it).
"use strict";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const token = params.get("token");
window.speechLog = [];
window.speechSent = params.get("record") === "1" ? [] : null;
let models = [];
let live = null;

function wsUrl() {
  const url = new URL("ws", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  if (token) url.searchParams.set("token", token);
  return url.toString();
}

function setStatus(text) { $("status").textContent = text; }

async function loadModels() {
  const response = await fetch("v1/models" + (token ? `?token=${encodeURIComponent(token)}` : ""));
  const described = await response.json();
  models = described.models.filter((m) => m.task === "asr");
  $("model").replaceChildren(...models.map((m) => new Option(m.name, m.name)));
  showLookaheads();
  setStatus("ready");
}

function showLookaheads() {
  const model = models.find((m) => m.name === $("model").value);
  const options = model && model.lookaheads_ms
    ? model.lookaheads_ms.map((ms) => new Option(`${ms} ms (chunk ${model.chunk_ms[String(ms)]} ms)`, ms))
    : [new Option("n/a", "")];
  $("lookahead").replaceChildren(...options);
  if (model && model.default_lookahead_ms !== undefined) $("lookahead").value = model.default_lookahead_ms;
}

function showMessage(message) {
  window.speechLog.push(message);
  if (message.type === "partial") {
    $("partial").textContent = message.text;
  } else if (message.type === "final") {
    $("partial").textContent = "";
    if (!message.text) return;
    const line = document.createElement("p");
    const words = message.words;
    const time = document.createElement("span");
    time.className = "time";
    time.textContent = words.length ? `${words[0].start.toFixed(2)}-${words[words.length - 1].end.toFixed(2)}` : "";
    line.append(time, message.text);
    $("finals").append(line);
  } else if (message.type === "ready") {
    setStatus(`listening: ${message.model}, ${message.chunk_ms} ms chunks, ${message.input.sample_rate} Hz in`);
  } else if (message.type === "done") {
    setStatus("done");
  } else if (message.type === "error") {
    setStatus(`error ${message.code}: ${message.message}`);
  }
}

async function start() {
  $("start").disabled = true;
  let media = null;
  let context = null;
  try {
    media = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    context = new AudioContext();
    await context.audioWorklet.addModule("capture-worklet.js");
  } catch (error) {
    if (media) media.getTracks().forEach((track) => track.stop());
    if (context) context.close();
    throw error;
  }
  const source = context.createMediaStreamSource(media);
  const capture = new AudioWorkletNode(context, "capture",
    { processorOptions: { frames: Math.round(context.sampleRate * 0.04) } });
  const mute = context.createGain();
  mute.gain.value = 0;
  source.connect(capture).connect(mute).connect(context.destination);

  const ws = new WebSocket(wsUrl());
  ws.binaryType = "arraybuffer";
  // Every handler checks that its session is still the live one: a late event of an old socket must not
  // touch a session started since.
  const session = { media, context, ws, capture, ready: false, stopping: false, waiting: [] };
  live = session;
  const send = (frame) => {
    if (window.speechSent) window.speechSent.push(new Float32Array(frame.slice(0)));
    ws.send(frame);
  };
  capture.port.onmessage = (event) => {
    if (live !== session || session.stopping) return; // after "end" nothing more may be sent
    if (session.ready) send(event.data);
    else session.waiting.push(event.data);
  };
  ws.onopen = () => {
    const lookahead = $("lookahead").value;
    ws.send(JSON.stringify({
      type: "start", task: "asr", model: $("model").value, sample_rate: context.sampleRate,
      encoding: "f32le", partials: true, ...(lookahead !== "" ? { lookahead_ms: Number(lookahead) } : {}),
    }));
  };
  ws.onmessage = (event) => {
    if (live !== session) return;
    const message = JSON.parse(event.data);
    showMessage(message);
    if (message.type === "ready") {
      session.ready = true;
      session.waiting.splice(0).forEach(send);
      if (session.stopping) ws.send(JSON.stringify({ type: "end" })); // Stop came before the session was ready
    } else if (message.type === "done" || (message.type === "error" && (message.fatal || !session.ready))) {
      finish(session); // a refused start (busy, bad parameter) ends the attempt too
    }
  };
  ws.onclose = (event) => {
    if (live !== session) return;
    setStatus(`connection closed (${event.code} ${event.reason})`);
    finish(session);
  };
  $("stop").disabled = false;
}

function stop() {
  const session = live;
  if (!session || session.stopping) return;
  session.stopping = true;
  session.media.getTracks().forEach((track) => track.stop());
  if (session.ready && session.ws.readyState === WebSocket.OPEN) session.ws.send(JSON.stringify({ type: "end" }));
  $("stop").disabled = true;
  setStatus("finishing...");
}

function finish(session) {
  if (live !== session) return;
  session.media.getTracks().forEach((track) => track.stop());
  session.context.close();
  if (session.ws.readyState === WebSocket.OPEN || session.ws.readyState === WebSocket.CONNECTING) session.ws.close();
  live = null;
  $("start").disabled = false;
  $("stop").disabled = true;
}

$("model").addEventListener("change", showLookaheads);
$("start").addEventListener("click", () => start().catch((error) => {
  setStatus(`microphone: ${error}`);
  $("start").disabled = false;
}));
$("stop").addEventListener("click", stop);
loadModels().catch((error) => setStatus(`cannot load models: ${error}`));
