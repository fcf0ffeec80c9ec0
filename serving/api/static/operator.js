// Lineguard operator page. Everything shown as text goes through textContent: data is never markup.
"use strict";
let items = [], sel = 0, cls = null, lastSeq = null, timers = [];
let cap = null, capOut = new Set(), capSel = 0, capKey = "", lastState = null;
const blobs = {};

async function image(el, path) {
  const r = await fetch(path, {headers: {Authorization: "Bearer " + token}});
  if (!r.ok) { el.removeAttribute("src"); el.alt = "no picture kept"; return; }
  const url = URL.createObjectURL(await r.blob());
  if (blobs[el.id]) URL.revokeObjectURL(blobs[el.id]);
  blobs[el.id] = url; el.src = url;
}

function show(loggedIn) {
  $("login").hidden = loggedIn; $("app").hidden = !loggedIn;
  timers.forEach(clearInterval); timers = [];
  if (loggedIn) { tick(); loadReview(); timers = [setInterval(tick, 400), setInterval(loadReview, 3000), setInterval(loadCapture, 3000)]; loadCapture(); }
}

function chip(el, state) { el.className = "chip " + state; }

async function tick() {
  let s; try { s = await api("/api/state"); } catch (e) { return; }
  $("station").textContent = s.station_id; $("bundle").textContent = s.bundle_version;
  $("signer").textContent = typeof s.bundle_signer === "string" && s.bundle_signer ? "signed by " + s.bundle_signer : "";
  $("demo").hidden = s.demo !== true; $("unsigned").hidden = s.bundle_unsigned !== true;
  $("who").textContent = s.user + " (" + s.role + ")";
  $("setupLink").hidden = s.role !== "engineer";
  chip($("plc"), s.actuator_kind === "none" ? "" : (s.plc_connected ? "ok" : "bad"));
  chip($("cam"), s.alarms.some(a => a.name === "camera") ? "bad" : "ok");
  renderSync(s);
  const banner = $("banner"), stop = s.status_level === "stop";
  banner.hidden = s.status_level === "ok"; banner.textContent = s.status_text;
  banner.className = s.status_level === "warn" ? "warn" : "";
  const v = $("verdict");
  v.textContent = s.last ? (stop ? "last part: " : "") + s.last.verdict : "—";
  v.className = (s.last ? s.last.verdict : "none") + (stop ? " muted" : "");  // never a big green PASS while unprotected
  $("npass").textContent = s.counts.PASS || 0; $("nfail").textContent = s.counts.FAIL || 0;
  $("nrev").textContent = s.reviewed; $("ndrop").textContent = s.dropped; $("nunseen").textContent = s.unseen;
  if (s.last) {
    const t = new Date(s.last.wall_time * 1000).toLocaleTimeString();
    const cls = s.last.class_name ? " · " + s.last.class_name + (s.last.detections.length ? " (" +
      Math.max(...s.last.detections.map(d => d.confidence)).toFixed(2) + ")" : "") : "";
    $("part").textContent = "part #" + s.last.seq + " · " + t + " · " + s.last.rule + cls + " · score " +
      (s.last.score == null ? "n/a" : s.last.score.toFixed(3)) + " / " + s.threshold.toFixed(3);
    if (s.last.seq !== lastSeq) {
      lastSeq = s.last.seq;
      $("crop").alt = $("heat").alt = "part #" + s.last.seq + " at " + t;
      if (s.last.has_view) { image($("crop"), "/api/live/crop.png?seq=" + s.last.seq); image($("heat"), "/api/live/overlay.png?seq=" + s.last.seq); }
      else { $("crop").removeAttribute("src"); $("heat").removeAttribute("src"); }
      renderLiveWhy(s.last);
    }
  }
  renderStability(s.stability);
  lastState = s; renderCapStart();
  renderAlarms(s.alarms);
  $("resetStop").hidden = !s.stop_line;
}

// ------------------------------------------------------------ sync backlog (fields absent on older stations)
function renderSync(s) {
  const net = $("net"), box = $("backlog"), y = s.sync;
  if (!y || typeof y !== "object") {
    chip(net, !s.sync_configured ? "" : (s.online ? "ok" : "warn")); net.textContent = "sync";
    box.textContent = ""; box.title = ""; return;
  }
  if (!y.target) { chip(net, ""); net.textContent = "no sync"; box.textContent = ""; box.title = ""; return; }
  chip(net, y.online ? "ok" : "warn"); net.textContent = y.online ? "sync online" : "sync OFFLINE";
  const n = Number(y.backlog_records) || 0;
  box.textContent = "backlog " + n + (n ? " · " + size(y.backlog_bytes) + (y.oldest_unsynced_age_s == null ? "" :
    " · oldest " + age(y.oldest_unsynced_age_s)) : "");
  box.className = y.online ? "dim" : "offline";
  const last = y.last_sync_at == null ? null : new Date(typeof y.last_sync_at === "number" ? y.last_sync_at * 1000 : y.last_sync_at);
  box.title = "to " + y.target + " · last sync " + (last && !isNaN(last) ? last.toLocaleString() : "never");
}

function size(b) {
  b = Number(b) || 0;
  return b < 1024 ? b + " B" : b < 1048576 ? (b / 1024).toFixed(0) + " kB" : b < 1073741824 ? (b / 1048576).toFixed(1) + " MB" : (b / 1073741824).toFixed(2) + " GB";
}

function age(s) {
  s = Number(s) || 0;
  return s < 90 ? Math.round(s) + " s" : s < 5400 ? Math.round(s / 60) + " min" : s < 172800 ? (s / 3600).toFixed(1) + " h" : (s / 86400).toFixed(1) + " d";
}

// ------------------------------------------------------------ why a FAIL failed (heatmap | nearest normal | 3 patches)
function nearestText(why) {
  const n = why.nearest;
  return n ? "nearest normal: " + n.file + (n.how === "best_patch" ? " (of the best patch)" : "") : "no nearest normal";
}

function patchesText(why) {
  if (!why.patches.length) return why.note || "no normal patches";
  return "its " + why.patches.length + " normal patches: " + why.patches.map(p => p.rank + " " + p.normal_file).join(" · ");
}

function renderLiveWhy(last) {
  const why = last.verdict === "FAIL" && last.has_view && last.explain ? last.explain : null;
  $("pics").classList.toggle("explain", !!why);
  $("fNormal").hidden = $("fPatches").hidden = !why;
  if (!why) { $("normal").removeAttribute("src"); $("patches").removeAttribute("src"); return; }
  $("normalCap").textContent = nearestText(why); $("patchesCap").textContent = patchesText(why);
  $("normal").alt = nearestText(why) + " (part #" + last.seq + ")"; $("patches").alt = patchesText(why);
  image($("normal"), "/api/explain/live/normal.jpg?seq=" + last.seq);
  image($("patches"), "/api/explain/live/patches.jpg?seq=" + last.seq);
}

async function renderReviewWhy(it) {
  let why = null;
  if (it.verdict === "FAIL") { try { why = await api("/api/explain/" + it.id); } catch (e) { why = null; } }
  if (items[sel] !== it) return;  // the operator moved on meanwhile
  $("preview").classList.toggle("explain", !!why);
  $("pnormal").hidden = $("ppatches").hidden = $("pwhy").hidden = !why;
  if (!why) { $("pnormal").removeAttribute("src"); $("ppatches").removeAttribute("src"); $("pwhy").textContent = ""; return; }
  $("pwhy").textContent = nearestText(why) + " · " + patchesText(why);
  $("pnormal").alt = nearestText(why); $("ppatches").alt = patchesText(why);
  image($("pnormal"), "/api/explain/" + it.id + "/normal.jpg"); image($("ppatches"), "/api/explain/" + it.id + "/patches.jpg");
}

function renderStability(st) {
  const bar = $("stabBar");
  if (!st.available) { $("stabVal").textContent = "n/a"; $("stabWhy").textContent = "bundle without a baseline"; bar.style.width = "0"; return; }
  bar.style.width = st.index + "%"; bar.className = st.alert ? "bad" : (st.index < 75 ? "warn" : "");
  $("stabVal").textContent = Math.round(st.index);
  const moving = st.components.find(c => c.name === st.moving);
  const frr = st.frr_expected == null ? "" : " · false rejects " + (st.frr_observed == null ? "–" : (100 * st.frr_observed).toFixed(1) + "%") +
    " vs " + (100 * st.frr_expected).toFixed(1) + "% [" + (100 * st.frr_interval[0]).toFixed(1) + "–" + (100 * st.frr_interval[1]).toFixed(1) + "]";
  $("stabWhy").textContent = (moving ? moving.name + ": " + moving.detail : (st.parts < 20 ? "warming up" : "steady")) + frr;
}

function renderAlarms(alarms) {
  const ul = $("alarms"), key = JSON.stringify(alarms.map(a => [a.name, a.message, a.acked_by, a.count]));
  if (ul.dataset.key === key) return;
  ul.dataset.key = key; ul.replaceChildren();
  for (const a of alarms) {
    const li = document.createElement("li"), text = document.createElement("span");
    li.className = a.level;
    text.textContent = a.name + ": " + a.message + (a.count > 1 ? " (×" + a.count + ")" : "") + (a.acked_by ? " — seen by " + a.acked_by : "");
    li.appendChild(text);
    if (!a.acked_by) {
      const b = document.createElement("button");
      b.textContent = "Acknowledge";
      b.onclick = () => api("/api/alarms/" + encodeURIComponent(a.name) + "/ack", {method: "POST"}).then(tick);
      li.appendChild(b);
    }
    ul.appendChild(li);
  }
}
$("resetStop").onclick = () => api("/api/stop-line/reset", {method: "POST"}).then(tick).catch(e => { $("rmsg").textContent = e.message; });

async function loadReview() {
  let r; try { r = await api("/api/review"); } catch (e) { return; }
  renderClasses(r.classes);
  const ids = r.items.map(i => i.id).join(",");
  if (ids === items.map(i => i.id).join(",")) return;
  items = r.items; sel = Math.min(sel, Math.max(items.length - 1, 0));
  const box = $("items"); box.replaceChildren();
  items.forEach((it, k) => {
    const card = document.createElement("div"), img = document.createElement("img"), cap = document.createElement("div");
    card.className = "item" + (k === sel ? " sel" : ""); card.dataset.id = it.id;
    img.id = "t" + it.id; img.alt = "part #" + it.seq;
    cap.textContent = "#" + it.seq + " " + it.score.toFixed(2) + " " + it.kind + (it.class_name ? " " + it.class_name : "");
    card.append(img, cap); card.onclick = () => { sel = k; highlight(); };
    box.appendChild(card); image(img, "/api/evidence/" + it.id + "/overlay.png");
  });
  $("decide").hidden = !items.length;
  highlight();
  if (!items.length) $("rmsg").textContent = "nothing to review";
}

function renderClasses(names) {
  const box = $("classes");
  if (box.dataset.key === names.join(",")) return;
  box.dataset.key = names.join(","); box.replaceChildren();
  names.forEach((n, k) => {
    const b = document.createElement("button");
    b.textContent = (k < 9 ? (k + 1) + " " : "") + n; b.dataset.name = n;
    b.onclick = () => pickClass(n);
    box.appendChild(b);
  });
}

function pickClass(name) {
  cls = cls === name ? null : name;
  document.querySelectorAll("#classes button").forEach(b => b.classList.toggle("on", b.dataset.name === cls));
}

function highlight() {
  document.querySelectorAll(".item").forEach((el, k) => el.classList.toggle("sel", k === sel));
  const it = items[sel];
  if (!it) return;
  $("pcap").textContent = "part #" + it.seq + " · " + new Date(it.wall_time * 1000).toLocaleTimeString() + " · " +
    it.verdict + " · score " + it.score.toFixed(3) + " · " + it.kind;
  image($("pcrop"), "/api/evidence/" + it.id + "/crop.png"); image($("pheat"), "/api/evidence/" + it.id + "/overlay.png");
  renderReviewWhy(it);
}

async function decide(disposition) {
  const it = items[sel];
  if (!it) return;
  const typed = $("newClass").value.trim();
  const body = {disposition, class_name: disposition === "defect" ? (typed || cls) : null};
  try {
    await api("/api/review/" + it.id, {method: "POST", body: JSON.stringify(body)});
    $("rmsg").textContent = "#" + it.seq + " → " + (disposition === "defect" ? "defect" + (body.class_name ? " (" + body.class_name + ")" : "") : "false alarm");
    $("newClass").value = ""; items = []; loadReview();
  } catch (err) { $("rmsg").textContent = err.message; }
}
$("btnPass").onclick = () => decide("false_alarm");
$("btnFail").onclick = () => decide("defect");

// ------------------------------------------------------------ recalibration capture
function capturePending() { return !!cap && cap.done && !cap.confirmed_by && cap.candidates.length > 0; }

// the prompt to capture shows on a drift alert (or to an engineer), never while a capture runs or awaits its confirmation
function renderCapStart() {
  const s = lastState;
  $("capStart").hidden = !s || !(s.stability.alert || s.role === "engineer") || (!!cap && !cap.done) || capturePending();
}

async function loadCapture() {
  try { cap = await api("/api/capture"); } catch (e) { return; }
  const panel = $("capture"), pending = capturePending(), running = !!cap && !cap.done;
  panel.hidden = !(pending || running); $("review").hidden = pending; renderCapStart();
  if (!cap) return;
  $("capInfo").textContent = running ? "capturing: " + cap.count + (cap.target_parts ? " / " + cap.target_parts : "") + " parts"
    : cap.candidates.length + " parts captured by " + cap.started_by + (cap.confirmed_by ? ", confirmed by " + cap.confirmed_by : "");
  $("capStop").hidden = !running; $("capConfirm").hidden = !pending; $("capGrid").hidden = !pending;
  const key = cap.id + ":" + cap.candidates.length + ":" + pending;
  if (!pending || key === capKey) return;
  capKey = key; capOut = new Set(cap.candidates.filter(c => c.flagged).map(c => c.id)); capSel = 0;
  const grid = $("capGrid"); grid.replaceChildren();
  cap.candidates.forEach((c, k) => {
    const b = document.createElement("button"), img = document.createElement("img");
    b.className = "cand" + (c.flagged ? " flag" : ""); b.dataset.id = c.id;
    b.title = "part #" + c.seq + " score " + (c.score == null ? "n/a" : c.score.toFixed(3)) + (c.flagged ? " — looks different" : "");
    img.id = "c" + c.id; img.alt = "part #" + c.seq; b.appendChild(img);
    b.onclick = () => { capSel = k; toggleOut(c.id); };
    grid.appendChild(b); image(img, "/api/evidence/" + c.id + "/crop.png");
  });
  paintCapture();
}

function toggleOut(id) { capOut.has(id) ? capOut.delete(id) : capOut.add(id); paintCapture(); }

function paintCapture() {
  document.querySelectorAll(".cand").forEach((el, k) => {
    el.classList.toggle("out", capOut.has(+el.dataset.id)); el.classList.toggle("sel", k === capSel);
  });
  const n = cap ? cap.candidates.length - capOut.size : 0;
  $("capConfirm").textContent = "Confirm " + n + " good"; $("capConfirm").appendChild(Object.assign(document.createElement("kbd"), {textContent: "Enter"}));
}

async function confirmCapture() {
  if (!capturePending()) return;
  const flagged = new Set(cap.candidates.filter(c => c.flagged).map(c => c.id));
  const body = {exclude: [...capOut].filter(id => !flagged.has(id)),
                include_flagged: [...flagged].filter(id => !capOut.has(id))};
  try {
    const r = await api("/api/capture/" + cap.id + "/confirm", {method: "POST", body: JSON.stringify(body)});
    $("cmsg").textContent = r.normal + " parts confirmed as normal, " + r.excluded + " excluded";
    capKey = ""; loadCapture();
  } catch (err) { $("cmsg").textContent = err.message; }
}
$("capConfirm").onclick = confirmCapture;
$("capStop").onclick = () => api("/api/capture/stop", {method: "POST"}).then(loadCapture).catch(e => { $("cmsg").textContent = e.message; });
$("capStart").onclick = () => api("/api/capture", {method: "POST", body: JSON.stringify({minutes: 10, parts: 600})})
  .then(loadCapture).catch(e => { $("rmsg").textContent = e.message; });

document.addEventListener("keydown", (e) => {
  if (!token || e.target.tagName === "INPUT") return;
  const k = e.key.toLowerCase();
  if (capturePending()) {
    const n = cap.candidates.length;
    if (k === "enter") confirmCapture();
    else if (k === "arrowright") { capSel = Math.min(capSel + 1, n - 1); paintCapture(); }
    else if (k === "arrowleft") { capSel = Math.max(capSel - 1, 0); paintCapture(); }
    else if (k === "x" || k === " ") { e.preventDefault(); toggleOut(cap.candidates[capSel].id); }
    return;
  }
  if (k === "arrowright") { sel = Math.min(sel + 1, items.length - 1); highlight(); }
  else if (k === "arrowleft") { sel = Math.max(sel - 1, 0); highlight(); }
  else if (/^[1-9]$/.test(k)) { const b = $("classes").children[+k - 1]; if (b) pickClass(b.dataset.name); }
  else if (k === "p") decide("false_alarm");
  else if (k === "f") decide("defect");
});

startSession(show);
