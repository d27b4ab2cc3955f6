// Upload with progress (XHR: fetch has no upload progress) and a live list of videos.
// Everything from the server is put in the page with textContent, never innerHTML.
"use strict";
const form = document.getElementById("upload");
const progress = document.getElementById("progress");
const message = document.getElementById("message");

function say(text, link) {
  message.textContent = text;
  if (link) {
    const a = document.createElement("a");
    a.href = link; a.id = "watch"; a.textContent = "Watch it";
    message.append(" ", a);
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const xhr = new XMLHttpRequest();
  xhr.open("POST", "/api/videos");
  xhr.responseType = "json";
  progress.hidden = false; progress.value = 0;
  xhr.upload.onprogress = (e) => { if (e.lengthComputable) progress.value = 100 * e.loaded / e.total; };
  xhr.onload = () => {
    const body = xhr.response || {};
    if (xhr.status === 202) {
      progress.value = 100;
      say("Upload complete. Captions are being generated.", body.page_url);
      form.reset();
      refresh();
    } else {
      say("Upload failed: " + (body.detail || xhr.statusText || xhr.status));
    }
  };
  xhr.onerror = () => say("Upload failed: the server could not be reached.");
  xhr.send(new FormData(form));
  say("Uploading…");
});

function row(video) {
  const tr = document.createElement("tr");
  tr.dataset.id = video.id;
  const title = document.createElement("td");
  const a = document.createElement("a");
  a.href = video.page_url; a.textContent = video.title; title.append(a);
  const status = document.createElement("td");
  const badge = document.createElement("span");
  badge.className = "status " + video.status; badge.textContent = video.status;
  if (video.error) badge.title = video.error;
  status.append(badge);
  const length = document.createElement("td");
  length.textContent = video.duration_s == null ? "" : video.duration_s.toFixed(1) + " s";
  const created = document.createElement("td");
  created.textContent = new Date(video.created_at).toLocaleString();
  tr.append(title, status, length, created);
  return tr;
}

async function refresh() {
  try {
    const response = await fetch("/api/videos");
    if (!response.ok) return;
    const videos = await response.json();
    const body = document.querySelector("#videos tbody");
    body.replaceChildren(...videos.map(row));
  } catch (e) { /* the next poll tries again */ }
}
setInterval(refresh, 2000);
