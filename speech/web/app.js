// The web page of `speech serve`: microphone -> AudioWorklet -> WebSocket (f32le at the AudioContext's rate;
// the server resamples) -> live captions; text -> a TTS session -> audio frames played as they come; and
// microphone -> a VC session (after a reference recording, or a server voice) -> converted frames played.
// `window.speechLog` keeps every server message; with `?record=1` `window.speechSent` also keeps a copy of
// every microphone frame sent, `window.speechReference` of every reference frame, and `window.speechHeard` of
// every audio frame received (end-to-end tests compare).
"use strict";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const token = params.get("token");
window.speechLog = [];
window.speechSent = params.get("record") === "1" ? [] : null;
window.speechHeard = params.get("record") === "1" ? [] : null;
window.speechReference = params.get("record") === "1" ? [] : null;
let models = [];
let live = null;
let speaking = null;
let converting = null;

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
  const tts = described.models.find((m) => m.task === "tts");
  if (tts) {
    $("voice").replaceChildren(...tts.voices.map((v) => new Option(v, v)));
    $("voice").value = tts.default_voice;
    $("tts-status").textContent = "ready";
  } else {
    $("speak").disabled = true;
    $("tts-status").textContent = "no TTS model on this server";
  }
  const vc = described.models.find((m) => m.task === "vc");
  if (vc) {
    const fromFile = new Option("from the reference recording", "");
    $("vc-voice").replaceChildren(fromFile, ...vc.voices.map((v) => new Option(`server voice: ${v}`, v)));
    $("vc-status").textContent = "ready";
  } else {
    $("convert").disabled = true;
    $("vc-status").textContent = "no VC model on this server";
  }
}

function play(session, samples) {
  // Audio frames are queued back to back on the context's clock, so playback starts with the first frame.
  if (window.speechHeard) window.speechHeard.push(samples);
  const context = session.context;
  const buffer = context.createBuffer(1, samples.length, context.sampleRate);
  buffer.copyToChannel(samples, 0);
  const source = context.createBufferSource();
  source.buffer = buffer;
  source.connect(context.destination);
  session.at = Math.max(session.at, context.currentTime + 0.02);
  source.start(session.at);
  session.at += buffer.duration;
}

function closeAfterPlayback(session) {
  const left = Math.max(0, session.at - session.context.currentTime);
  setTimeout(() => session.context.close(), 1000 * left + 200);
}

function showTab(button) {
  document.querySelectorAll('[role="tab"]').forEach((tab) => {
    tab.setAttribute("aria-selected", String(tab === button));
    $(tab.dataset.panel).hidden = tab !== button;
  });
}

function speak() {
  // One TTS session: the text goes as one message, the audio frames (f32le at the AudioContext's rate, the
  // server resamples) are played as they come.
  const context = new AudioContext();
  const ws = new WebSocket(wsUrl());
  ws.binaryType = "arraybuffer";
  const session = { context, ws, at: 0 };
  speaking = session;
  $("speak").disabled = true;
  $("hush").disabled = false;
  ws.onopen = () => ws.send(JSON.stringify({
    type: "start", task: "tts", voice: $("voice").value, sample_rate: context.sampleRate, encoding: "f32le" }));
  ws.onmessage = (event) => {
    if (speaking !== session) return;
    if (typeof event.data !== "string") {
      play(session, new Float32Array(event.data));
      return;
    }
    const message = JSON.parse(event.data);
    window.speechLog.push(message);
    if (message.type === "ready") {
      $("tts-status").textContent = `speaking: ${message.model}, voice ${message.voice}`;
      ws.send(JSON.stringify({ type: "text", text: $("text").value }));
      ws.send(JSON.stringify({ type: "end" }));
    } else if (message.type === "done") {
      $("tts-status").textContent = `done: ${message.audio_s} s of audio`;
      endSpeaking(session, false);
      closeAfterPlayback(session);
    } else if (message.type === "error") {
      $("tts-status").textContent = `error ${message.code}: ${message.message}`;
      endSpeaking(session, true);
    }
  };
  ws.onclose = () => endSpeaking(session, false);
}

function endSpeaking(session, silence) {
  if (speaking !== session) return;
  speaking = null;
  if (silence) session.context.close();
  if (session.ws.readyState === WebSocket.OPEN) session.ws.close();
  $("speak").disabled = false;
  $("hush").disabled = true;
}

function hush() {
  const session = speaking;
  if (!session) return;
  if (session.ws.readyState === WebSocket.OPEN) session.ws.send(JSON.stringify({ type: "cancel" }));
  $("tts-status").textContent = "stopped";
  endSpeaking(session, true);
}

async function convert() {
  // One VC session: the reference recording first (decoded by the browser at the context's rate, sent in
  // 250 ms frames, then reference_end), or a server voice; once the voice is ready the microphone's frames go
  // out and the converted frames come back and play. Frames captured before that are not sent.
  const voice = $("vc-voice").value;
  const file = $("reference").files[0];
  if (!voice && !file) {
    $("vc-status").textContent = "choose a reference recording (3-10 s of the target voice) or a server voice";
    return;
  }
  $("convert").disabled = true;
  const { media, context, capture } = await openMicrophone();
  const session = { media, context, capture, ws: null, ready: false, stopping: false, at: 0 };
  converting = session;
  $("convert-stop").disabled = false;
  let reference = null;
  try {
    if (!voice) reference = monoOf(await context.decodeAudioData(await file.arrayBuffer()));
  } catch (error) {
    endConverting(session); // the microphone closes again
    throw new Error(`cannot decode ${file.name}: ${error}`);
  }
  const ws = new WebSocket(wsUrl());
  session.ws = ws;
  ws.binaryType = "arraybuffer";
  capture.port.onmessage = (event) => {
    if (converting !== session || session.stopping || !session.ready) return;
    if (window.speechSent) window.speechSent.push(new Float32Array(event.data.slice(0)));
    ws.send(event.data);
  };
  ws.onopen = () => ws.send(JSON.stringify({
    type: "start", task: "vc", sample_rate: context.sampleRate, encoding: "f32le", ...(voice ? { voice } : {}) }));
  ws.onmessage = (event) => {
    if (converting !== session) return;
    if (typeof event.data !== "string") {
      play(session, new Float32Array(event.data));
      return;
    }
    const message = JSON.parse(event.data);
    window.speechLog.push(message);
    const status = $("vc-status");
    if (message.type === "ready" && message.awaiting === "reference") {
      status.textContent = `sending the reference (${(reference.length / context.sampleRate).toFixed(1)} s)...`;
      const frame = Math.round(context.sampleRate * 0.25);
      for (let at = 0; at < reference.length; at += frame) {
        const piece = reference.slice(at, at + frame);
        if (window.speechReference) window.speechReference.push(piece);
        ws.send(piece.buffer);
      }
      ws.send(JSON.stringify({ type: "reference_end" }));
    } else if (message.type === "ready" || message.type === "voice_ready") {
      session.ready = true;
      status.textContent = `converting: ${message.chunk_ms ? message.chunk_ms.toFixed(0) + " ms chunks" : `voice from ${message.used_s} s of reference`}`;
      if (session.stopping) ws.send(JSON.stringify({ type: "end" }));
    } else if (message.type === "done") {
      status.textContent = `done: ${message.audio_s} s converted`;
      endConverting(session);
    } else if (message.type === "error") {
      status.textContent = `error ${message.code}: ${message.message}`;
      if (message.fatal || !session.ready) endConverting(session);
    }
  };
  ws.onclose = () => endConverting(session);
}

function monoOf(buffer) {
  const mono = new Float32Array(buffer.length);
  for (let c = 0; c < buffer.numberOfChannels; c++) {
    const channel = buffer.getChannelData(c);
    for (let i = 0; i < buffer.length; i++) mono[i] += channel[i] / buffer.numberOfChannels;
  }
  return mono;
}

function stopConverting() {
  // The microphone stops and the session ends; what is converted until then still plays.
  const session = converting;
  if (!session || session.stopping) return;
  session.stopping = true;
  session.media.getTracks().forEach((track) => track.stop());
  if (session.ready && session.ws.readyState === WebSocket.OPEN) session.ws.send(JSON.stringify({ type: "end" }));
  else if (!session.ready) endConverting(session);
  $("convert-stop").disabled = true;
  $("vc-status").textContent = "finishing...";
}

function endConverting(session) {
  if (converting !== session) return;
  converting = null;
  session.media.getTracks().forEach((track) => track.stop());
  if (session.ws && (session.ws.readyState === WebSocket.OPEN || session.ws.readyState === WebSocket.CONNECTING)) {
    session.ws.close();
  }
  closeAfterPlayback(session);
  $("convert").disabled = false;
  $("convert-stop").disabled = true;
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

async function openMicrophone() {
  // The microphone through the capture worklet: 40 ms frames of f32 at the AudioContext's rate.
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
  return { media, context, capture };
}

async function start() {
  $("start").disabled = true;
  const { media, context, capture } = await openMicrophone();
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
$("speak").addEventListener("click", speak);
$("convert").addEventListener("click", () => convert().catch((error) => {
  $("vc-status").textContent = `${error}`;
  $("convert").disabled = false;
}));
$("convert-stop").addEventListener("click", stopConverting);
$("hush").addEventListener("click", hush);
document.querySelectorAll('[role="tab"]').forEach((tab) => tab.addEventListener("click", () => showTab(tab)));
loadModels().catch((error) => setStatus(`cannot load models: ${error}`));
