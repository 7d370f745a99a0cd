// facemask-edge view: the live page polls /api/live, the try-it page posts photos to /api/try.
// Plain JavaScript, no build step, no library.
"use strict";

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function showScores(box, answer, labels) {
  box.textContent = "";
  answer.scores.forEach((s, i) => {
    const p = answer.probs && answer.probs.length ? answer.probs[i] : null;
    const row = el("div", { class: "bar", "data-index": i, "data-score": s });
    row.appendChild(el("span", { class: "name" }, labels[i] || String(i)));
    const fill = el("span", { class: "fill" });
    fill.style.width = Math.round(200 * (p === null ? (s + 128) / 255 : p)) + "px";
    row.appendChild(fill);
    row.appendChild(el("span", { class: "value" }, (p === null ? "" : p.toFixed(3) + " ") + "(" + s + ")"));
    box.appendChild(row);
  });
}

// ---- live ----
function startLive() {
  const status = document.getElementById("status");
  let after = 0, shown = 0, busy = false;
  const labels = JSON.parse(document.body.dataset.labels || "[]");
  async function poll() {
    if (busy) return;
    busy = true;
    try {
      const r = await fetch("/api/live?after=" + after, { cache: "no-store" });
      const d = await r.json();
      status.className = "status " + d.status.replace(" ", "-");
      status.textContent = d.status === "connected" ? "board connected: " + d.message
        : d.status === "disconnected" ? "board disconnected: " + d.message : d.message;
      for (const f of d.frames) {
        after = Math.max(after, f.n);
        shown += 1;
        document.getElementById("frame").src = f.image;
        document.getElementById("frame").dataset.n = f.n;
        document.getElementById("label").textContent = f.name;
        showScores(document.getElementById("scores"), f, labels);
        document.getElementById("latency").textContent = (f.micros / 1000).toFixed(2) + " ms";
        document.getElementById("board-frame").textContent = f.board_frame;
        document.getElementById("count").textContent = shown;
        const li = el("li", { class: "prediction", "data-n": f.n });
        li.appendChild(el("img", { src: f.image, alt: "" }));
        li.appendChild(document.createTextNode(new Date(f.t * 1000).toLocaleTimeString() + "  " + f.name +
          "  [" + f.scores.join(", ") + "]  " + (f.micros / 1000).toFixed(2) + " ms"));
        const h = document.getElementById("history");
        h.insertBefore(li, h.firstChild);
        while (h.children.length > 40) h.removeChild(h.lastChild);
      }
    } catch (e) {
      status.className = "status disconnected";
      status.textContent = "the view server does not answer (" + e + ")";
    } finally {
      busy = false;
    }
  }
  poll();
  setInterval(poll, 200);
}

// ---- try it ----
function startTry() {
  const form = document.getElementById("try-form");
  const err = document.getElementById("try-error");
  const labels = JSON.parse(document.body.dataset.labels || "[]");
  let snapshot = null;  // a webcam picture, used instead of the file

  function fail(message) {
    err.hidden = false;
    err.textContent = message;
  }

  async function send(blob, name) {
    err.hidden = true;
    const fd = new FormData();
    fd.append("image", blob, name);
    if (document.getElementById("to-board").checked) fd.append("board", "1");
    document.getElementById("send").disabled = true;
    try {
      const r = await fetch("/api/try", { method: "POST", body: fd });
      let d;
      try { d = await r.json(); } catch (e) { return fail("the server answered " + r.status); }
      if (d.error) return fail(d.error);
      document.getElementById("try-result").hidden = false;
      document.getElementById("crop").src = d.crop;
      const host = document.getElementById("host-answer");
      host.querySelector(".label").textContent = d.host.name;
      showScores(host.querySelector(".scores"), d.host, labels);
      host.dataset.scores = d.host.scores.join(",");
      const board = document.getElementById("board-answer");
      if (d.board || d.board_error) {
        board.hidden = false;
        board.querySelector(".label").textContent = d.board ? d.board.name : "—";
        board.querySelector(".scores").textContent = "";
        if (d.board) showScores(board.querySelector(".scores"), d.board, labels);
        board.querySelector(".facts").textContent = d.board ? "latency " + (d.board.micros / 1000).toFixed(2) + " ms"
          : d.board_error;
        board.dataset.scores = d.board ? d.board.scores.join(",") : "";
      } else {
        board.hidden = true;
      }
    } catch (e) {
      fail("the view server does not answer (" + e + ")");
    } finally {
      document.getElementById("send").disabled = false;
    }
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const file = document.getElementById("photo").files[0];
    if (snapshot && !file) return send(snapshot, "webcam.png");
    if (!file) return fail("choose a photo first");
    send(file, file.name);
  });

  document.getElementById("webcam").addEventListener("click", async () => {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      return fail("this browser gives no webcam here (it needs localhost or https)");
    }
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ video: true });
      const video = document.getElementById("video");
      video.srcObject = stream;
      video.hidden = false;
      document.getElementById("snap").hidden = false;
    } catch (e) {
      fail("no webcam: " + e.message);
    }
  });

  document.getElementById("snap").addEventListener("click", () => {
    const video = document.getElementById("video");
    const canvas = el("canvas");
    canvas.width = video.videoWidth || 320;
    canvas.height = video.videoHeight || 240;
    canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
    canvas.toBlob((blob) => { snapshot = blob; send(blob, "webcam.png"); }, "image/png");
  });
}

if (document.body.dataset.page === "live") startLive();
if (document.body.dataset.page === "try") startTry();
