// The console list: polls /api/consoles and filters locally; no framework.
"use strict";
(function () {
  const POLL_MS = 3000;
  const rows = document.getElementById("rows");
  const filter = document.getElementById("filter");
  const summary = document.getElementById("summary");
  const status = document.getElementById("status");
  let consoles = [];

  function ago(s) {
    if (s === null || s === undefined) return "never";
    s = Math.max(0, Math.floor(s));
    if (s >= 86400) return Math.floor(s / 86400) + "d ago";
    if (s >= 3600) return Math.floor(s / 3600) + "h ago";
    if (s >= 60) return Math.floor(s / 60) + "m ago";
    return s + "s ago";
  }

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v; else e.setAttribute(k, v);
    }
    for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return e;
  }

  // Filter words all have to match: "tag:x", "state:x", "panic", or part of the name.
  function matches(c, words) {
    return words.every(function (w) {
      if (w.startsWith("tag:")) return c.tags.some((t) => t.toLowerCase() === w.slice(4));
      if (w.startsWith("state:")) return (c.state + " " + c.state_words).toLowerCase().includes(w.slice(6));
      if (w === "panic") return c.panic_count > 0;
      if (w === "bad") return !c.healthy;
      return c.name.toLowerCase().includes(w) || c.tags.some((t) => t.toLowerCase() === w);
    });
  }

  function render() {
    const words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    const shown = consoles.filter((c) => matches(c, words));
    const frag = document.createDocumentFragment();
    for (const c of shown) {
      const state = el("td", {class: c.healthy ? "state-good" : "state-bad"}, c.state_words);
      if (c.state_detail) state.append(el("div", {class: "detail"}, c.state_detail));
      state.title = c.state + " for " + ago(c.state_age).replace(" ago", "");
      const panics = el("td", {class: "num"});
      if (c.panic_count > 0) panics.append(el("span", {class: "panic", title: "kernel panics seen"}, c.panic_count));
      const tags = el("td");
      for (const t of c.tags) tags.append(el("span", {class: "tag"}, t));
      frag.append(el("tr", {},
        el("td", {}, el("a", {href: "/consoles/" + encodeURIComponent(c.name)}, c.name)),
        state,
        el("td", {title: c.last_output ? new Date(c.last_output * 1000).toLocaleString() : ""},
           ago(c.last_output_age)),
        el("td", {class: "num"}, c.viewers),
        el("td", {}, c.writer || ""),
        panics,
        tags));
    }
    if (!shown.length) frag.append(el("tr", {}, el("td", {colspan: "7", class: "muted"},
      consoles.length ? "No console matches the filter." : "No consoles you may see.")));
    rows.replaceChildren(frag);
    const bad = consoles.filter((c) => !c.healthy).length;
    summary.textContent = shown.length + " of " + consoles.length + " shown, " + bad + " not connected";
  }

  async function poll() {
    try {
      const r = await fetch("/api/consoles", {credentials: "same-origin", headers: {Accept: "application/json"}});
      if (r.status === 401) { location.href = "/login?next=/"; return; }
      if (!r.ok) throw new Error("HTTP " + r.status);
      consoles = (await r.json()).consoles;
      status.textContent = "";
      render();
    } catch (e) {
      status.textContent = "cannot reach solgate (" + e.message + "); retrying";
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }

  const params = new URLSearchParams(location.search);
  if (params.get("q")) filter.value = params.get("q");
  filter.addEventListener("input", function () {
    const q = filter.value ? "?q=" + encodeURIComponent(filter.value) : location.pathname;
    history.replaceState(null, "", q);
    render();
  });
  poll();
})();
