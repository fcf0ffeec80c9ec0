// Lineguard setup page. Data is shown through textContent and drawn on canvases: never inserted as markup.
"use strict";
let timers = [], lastSeq = null, frameUrl = null, frameSize = null, view = null, focusTrail = [];
let savedRoi = null, drawn = null, dragFrom = null, trailKey = null;

function show(loggedIn) {
  $("login").hidden = loggedIn; $("app").hidden = !loggedIn;
  timers.forEach(clearInterval); timers = [];
  if (loggedIn) { refresh(); live(); timers = [setInterval(live, 500), setInterval(refresh, 1000)]; }
}
function say(el, text, bad) { el.textContent = text; el.classList.toggle("err", !!bad); }
const time = (t) => t ? new Date(t * 1000).toLocaleTimeString() : "";
const age = (s) => s == null ? "–" : s < 120 ? Math.round(s) + " s" : s < 7200 ? Math.round(s / 60) + " min" : (s / 3600).toFixed(1) + " h";

// ------------------------------------------------------------------ camera: frame, focus, exposure
async function live() {
  let f; try { f = await api("/api/setup/live"); } catch (e) { $("frameInfo").textContent = e.message; return; }
  frameSize = [f.frame_w, f.frame_h];
  $("frameInfo").textContent = "part #" + f.seq + " · " + time(f.wall_time) + " · " + f.verdict + " · " +
    f.frame_w + "×" + f.frame_h + " px · figures of the " + (f.region === "roi" ? "ROI" : "whole frame");
  if (f.seq !== lastSeq) {
    lastSeq = f.seq;
    const r = await fetch("/api/setup/frame.png", {headers: {Authorization: "Bearer " + token}});
    if (r.ok) {
      const url = URL.createObjectURL(await r.blob());
      if (frameUrl) URL.revokeObjectURL(frameUrl);
      frameUrl = url; $("frame").src = url;
    }
    const key = f.region + "|" + savedRoi;  // a new ROI measures other pixels: start the trail again
    if (key !== trailKey) { trailKey = key; focusTrail = []; }
    focusTrail.push(f.focus); focusTrail = focusTrail.slice(-60);
  }
  $("focus").textContent = f.focus.toFixed(0);
  $("focusRef").textContent = "peak " + Math.max(...focusTrail).toFixed(0) +
    (f.baseline_sharpness != null && f.model_sharpness != null ? " · model view " + f.model_sharpness.toFixed(0) +
      " vs enrollment " + f.baseline_sharpness.toFixed(0) : "");
  drawTrend();
  const e = $("expo");
  e.textContent = f.exposure === "ok" ? "OK" : f.exposure.replace("_", " ");
  e.className = f.exposure === "ok" ? "ok" : "bad";
  $("expoHint").textContent = f.exposure_hint;
  drawHist(f.histogram);
}

function drawTrend() {
  const c = $("focusTrend"), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  if (!focusTrail.length) return;
  const hi = Math.max(...focusTrail) * 1.1 || 1, step = c.width / 59;
  g.strokeStyle = "#6fb6ff"; g.lineWidth = 2; g.beginPath();
  focusTrail.forEach((v, i) => { const x = i * step, y = c.height - (v / hi) * c.height; i ? g.lineTo(x, y) : g.moveTo(x, y); });
  g.stroke();
}

function drawHist(h) {
  const c = $("hist"), g = c.getContext("2d"), hi = Math.max(...h) || 1, w = c.width / h.length;
  g.clearRect(0, 0, c.width, c.height);
  h.forEach((v, i) => {
    g.fillStyle = (i === 0 || i === h.length - 1) ? "#e04848" : "#bbbbbb";  // the clipping ends
    const bh = (v / hi) * c.height;
    g.fillRect(i * w + 1, c.height - bh, w - 2, bh);
  });
}

// ------------------------------------------------------------------ ROI drawing (mouse and touch)
const canvas = $("roiCanvas");
const parseRoi = (t) => t ? t.split(",").map(Number) : null;

function toFrame(ev) {
  const r = canvas.getBoundingClientRect();
  const x = Math.min(Math.max(ev.clientX - r.left, 0), r.width), y = Math.min(Math.max(ev.clientY - r.top, 0), r.height);
  return [x / r.width * frameSize[0], y / r.height * frameSize[1]];
}
canvas.addEventListener("pointerdown", (ev) => {
  if (!frameSize || $("roiSave").dataset.locked) return;
  canvas.setPointerCapture(ev.pointerId); dragFrom = toFrame(ev); ev.preventDefault();
});
canvas.addEventListener("pointermove", (ev) => {
  if (!dragFrom) return;
  const p = toFrame(ev);
  drawn = [Math.round(Math.min(dragFrom[0], p[0])), Math.round(Math.min(dragFrom[1], p[1])),
           Math.round(Math.abs(p[0] - dragFrom[0])), Math.round(Math.abs(p[1] - dragFrom[1]))];
  drawRoi();
});
canvas.addEventListener("pointerup", () => {
  dragFrom = null;
  if (drawn && (drawn[2] < 4 || drawn[3] < 4)) drawn = null;  // a tap, not a drag
  $("roiDrawn").textContent = drawn ? drawn.join(",") : "–";
  $("roiSave").disabled = !drawn || !!$("roiSave").dataset.locked;
  drawRoi();
});
$("frame").addEventListener("load", () => {  // as large as the column allows, never taller than 62 % of the screen
  const img = $("frame");
  $("view").style.maxWidth = Math.round(0.62 * window.innerHeight * img.naturalWidth / img.naturalHeight) + "px";
  drawRoi();
});
window.addEventListener("resize", drawRoi);

function drawRoi() {
  const r = canvas.getBoundingClientRect();
  canvas.width = Math.round(r.width); canvas.height = Math.round(r.height);
  const g = canvas.getContext("2d");
  if (!frameSize) return;
  const k = [canvas.width / frameSize[0], canvas.height / frameSize[1]];
  const rect = (q) => [q[0] * k[0], q[1] * k[1], q[2] * k[0], q[3] * k[1]];
  if (drawn) {  // dim what the model will not see
    const d = rect(drawn);
    g.fillStyle = "rgba(0,0,0,0.45)"; g.fillRect(0, 0, canvas.width, canvas.height); g.clearRect(...d);
    g.strokeStyle = "#ffd400"; g.lineWidth = 2; g.setLineDash([]); g.strokeRect(...d);
  }
  const s = parseRoi(savedRoi);
  if (s) { g.strokeStyle = "#3ddc62"; g.lineWidth = 2; g.setLineDash([6, 4]); g.strokeRect(...rect(s)); }
}

async function saveRoi(roi) {
  try {
    const r = await api("/api/setup/roi", {method: "PUT", body: JSON.stringify({roi})});
    say($("roiMsg"), "saved " + (r.roi || "(the bundle's ROI)") + "; applies " + r.applies);
    drawn = null; $("roiDrawn").textContent = "–"; $("roiSave").disabled = true; refresh();
  } catch (e) { say($("roiMsg"), e.message, true); }
}
$("roiSave").onclick = () => drawn && saveRoi(drawn.join(","));
$("roiClear").onclick = () => saveRoi(null);

// ------------------------------------------------------------------ baseline, signal test, checklist
$("baseStart").onclick = async () => {
  try {
    await api("/api/setup/baseline", {method: "POST", body: JSON.stringify({name: $("baseName").value.trim(), count: Number($("baseCount").value)})});
    say($("baseMsg"), "capturing…"); refresh();
  } catch (e) { say($("baseMsg"), e.message, true); }
};
$("baseStop").onclick = () => api("/api/setup/baseline/stop", {method: "POST"}).then(refresh).catch(e => say($("baseMsg"), e.message, true));
$("sigStart").onclick = () => api("/api/setup/signal-test", {method: "POST"}).then(refresh).catch(e => say($("sigResult"), e.message, true));

async function refresh() {
  let s; try { s = await api("/api/setup"); } catch (e) { return; }
  $("station").textContent = s.station_id; $("bundle").textContent = s.bundle_version + " · threshold " + s.threshold.toFixed(3);
  $("who").textContent = s.user + " (" + s.role + ")";
  $("readonly").hidden = s.can_edit;
  for (const id of ["roiClear", "baseStart", "baseStop", "sigStart", "baseName", "baseCount"]) $(id).disabled = !s.can_edit;
  if (!s.can_edit) $("roiSave").dataset.locked = "1"; else delete $("roiSave").dataset.locked;
  savedRoi = s.roi;
  $("roiNow").textContent = s.roi || "whole frame";
  $("roiFrom").textContent = "(" + {config: "station config", bundle: "the bundle's", none: "no ROI"}[s.roi_from] + ")";
  $("roiMin").textContent = s.roi_min_px[0] + "×" + s.roi_min_px[1];
  $("roiFile").textContent = s.config_file ? "config file: " + s.config_file :
    "this station runs without a config file: the ROI cannot be saved here";
  drawRoi();
  renderBaseline(s.baseline);
  renderSignal(s.signal);
  renderSafeguards(s.safeguards);
  renderChecklist(s.checklist, s.checklist_error, s.can_edit);
}

function renderBaseline(b) {
  $("baseStop").hidden = !b || b.done;
  if (!b) return;
  $("baseBar").style.width = Math.min(100, 100 * b.saved / b.target) + "%";
  $("baseInfo").textContent = b.saved + " of " + b.target + " frames saved in " + b.folder + "/train/good" +
    (b.skipped ? " (" + b.skipped + (b.skipped === 1 ? " part" : " parts") + " without a picture skipped)" : "") + (b.done ? (b.stopped ? " · stopped" : " · done") : "");
  if (b.error) say($("baseMsg"), b.error, true); else if (b.done) say($("baseMsg"), "baseline ready: check the pictures, then enroll");
  $("enrollCmd").textContent = b.enroll_command;
}

function renderSignal(t) {
  const f = $("sigFail"), p = $("sigPulse");
  if (!t) { f.className = p.className = ""; return; }
  f.className = t.fail_seq != null ? "ok" : "";
  f.textContent = t.fail_seq != null ? "part #" + t.fail_seq + " FAILed (" + t.fail_rule + ", score " +
    (t.fail_score == null ? "n/a" : t.fail_score.toFixed(3)) + ")" : "waiting for a known defective part to FAIL…";
  const pulsed = t.pulse_seq != null && !t.pulse_problem;
  p.className = pulsed ? "ok" : (t.pulse_problem ? "warn" : "");
  p.textContent = pulsed ? "reject pulse for part #" + t.pulse_seq + ": started " + t.pulse_start_error_ms.toFixed(1) +
    " ms from its time, lasted " + t.pulse_width_ms.toFixed(1) + " ms" :
    (t.pulse_problem || (t.pulse_observable ? "waiting for its reject pulse…" : "no pulse the station can see: see below"));
  $("cardSignal").classList.toggle("pass", t.passed);
  const r = $("sigResult");
  r.className = t.passed ? "pass" : "";
  r.textContent = t.passed ? "PASSED at " + time(t.passed_at) + " (started by " + t.started_by + " at " + time(t.started_at) + ")" :
    "running since " + time(t.started_at) + " (parts after #" + t.after_seq + ")";
  $("sigNote").textContent = t.note;
}

function renderSafeguards(g) {
  const st = $("safeStab");
  st.className = !g.stability_available ? "warnc" : (g.stability_alert ? "badc" : "good");
  st.textContent = g.stability_available ? "Stability Index " + (g.stability_index == null ? "–" : Math.round(g.stability_index)) +
    " (alarm below " + g.alert_below + ")" + (g.stability_moving ? " · moving: " + g.stability_moving : "") :
    "no Stability Index: the bundle has no enrollment baseline (re-export it)";
  const sy = $("safeSync");
  sy.className = !g.sync_configured ? "warnc" : (g.online ? "good" : "warnc");
  sy.textContent = (g.sync_configured ? "sync " + (g.online ? "online" : "OFFLINE") + " · backlog " + g.backlog +
    " records (" + g.backlog_mb + " MB), oldest " + age(g.backlog_age_s) : "no sync target configured: " + g.backlog +
    " records kept on the station only") + " · quota " + g.quota_mb + " MB";
  $("safePlc").textContent = "actuator " + g.actuator_kind + (g.actuator_kind === "none" ? "" : (g.plc_connected ? " · PLC connected" : " · PLC NOT connected"));
}

function renderChecklist(items, error, canEdit) {
  say($("checkMsg"), error || "", !!error);
  const ul = $("checklist"), key = JSON.stringify([items, canEdit]);
  if (ul.dataset.key === key) return;
  ul.dataset.key = key; ul.replaceChildren();
  for (const it of items) {
    const li = document.createElement("li"), box = document.createElement("input"), label = document.createElement("label");
    const meta = document.createElement("div"), note = document.createElement("input");
    box.type = "checkbox"; box.id = "chk-" + it.id; box.checked = it.done; box.disabled = !canEdit;
    label.htmlFor = box.id; label.textContent = it.title;
    meta.className = "meta";
    meta.textContent = "done when " + it.done_when + (it.by ? " · " + (it.done ? "ticked" : "unticked") + " by " + it.by + " " + time(it.at) : "");
    note.className = "note"; note.id = "note-" + it.id; note.placeholder = "note (what was checked)"; note.maxLength = 500;
    note.value = it.note; note.disabled = !canEdit;
    box.onchange = () => api("/api/setup/checklist/" + encodeURIComponent(it.id), {method: "PUT", body: JSON.stringify({done: box.checked, note: note.value})})
      .then(() => { say($("checkMsg"), "saved"); refresh(); }).catch(e => { box.checked = !box.checked; say($("checkMsg"), e.message, true); });
    li.append(box, label, meta, note);
    ul.appendChild(li);
  }
}

startSession(show);
