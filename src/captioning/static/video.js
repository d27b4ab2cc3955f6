// The player page: poll the video's status; when captions exist, add the <track>, enable the
// CC toggle and turn captions on by themselves. The toggle shows or hides them afterwards.
"use strict";
const card = document.getElementById("player-card");
const id = card.dataset.id;
const video = document.getElementById("video");
const cc = document.getElementById("cc");
const note = document.getElementById("cc-note");
const statusEl = document.getElementById("status");
const errorEl = document.getElementById("error");

function setCaptions(on) {
  const track = video.textTracks[0];
  if (!track) return;
  track.mode = on ? "showing" : "hidden";
  cc.setAttribute("aria-pressed", on ? "true" : "false");
}

function captionsLoaded() {
  cc.disabled = false;
  cc.title = "Show or hide captions";
  note.textContent = "";
  setCaptions(true);
}

function watchTrack(el) {
  if (el.readyState === 2) captionsLoaded();
  else el.addEventListener("load", captionsLoaded, { once: true });
  el.addEventListener("error", () => { note.textContent = "Captions could not be loaded."; });
}

function addTrack(url) {
  const el = document.createElement("track");
  el.id = "captions"; el.kind = "captions"; el.srclang = "en"; el.label = "English";
  el.src = url; el.default = true;
  video.append(el);
  el.track.mode = "showing"; // a track loads only when its mode is not "disabled"
  watchTrack(el);
}

cc.addEventListener("click", () => setCaptions(cc.getAttribute("aria-pressed") !== "true"));

const existing = document.getElementById("captions");
if (existing) watchTrack(existing);

async function poll() {
  try {
    const response = await fetch("/api/videos/" + encodeURIComponent(id));
    if (response.ok) {
      const body = await response.json();
      statusEl.textContent = body.status;
      statusEl.className = "status " + body.status;
      errorEl.textContent = body.error || "";
      if (body.status === "done" && !document.getElementById("captions")) addTrack(body.captions_url);
      if (body.status === "failed") note.textContent = "No captions: " + (body.error || "failed");
      if (body.status === "done" || body.status === "failed") return;
    }
  } catch (e) { /* try again */ }
  setTimeout(poll, 1000);
}
if (card.dataset.status !== "done") poll();
