// Shared by the operator and setup pages: the login form, this tab's session token, API calls with it.
// Loaded before the page's own script; data is never inserted as markup here either.
"use strict";
const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("lg_token");  // one session for both pages of this tab
let onSession = () => {};

async function api(path, opts = {}) {
  opts.headers = Object.assign({"Content-Type": "application/json"}, opts.headers || {},
                               token ? {Authorization: "Bearer " + token} : {});
  const r = await fetch(path, opts);
  if (r.status === 401) { logout(); throw new Error("session ended: log in again"); }
  if (!r.ok) throw new Error((await r.json().catch(() => ({detail: r.statusText}))).detail);
  return r.json();
}

function logout() {
  if (token) fetch("/api/logout", {method: "POST", headers: {Authorization: "Bearer " + token}}).catch(() => {});
  token = null; sessionStorage.removeItem("lg_token"); onSession(false);
}

// Wire the login form and the log-out button; ``show(loggedIn)`` switches the page between the two.
function startSession(show) {
  onSession = show;
  $("login").onsubmit = async (e) => {
    e.preventDefault();
    try {
      const r = await api("/api/login", {method: "POST", body: JSON.stringify({username: $("user").value, password: $("pass").value})});
      token = r.token; sessionStorage.setItem("lg_token", token); $("pass").value = ""; show(true);
    } catch (err) { $("msg").textContent = err.message; }
  };
  $("logout").onclick = logout;
  show(!!token);
}
