// The events page: panics, SOL up/down, breaks, power actions of every console the user
// may see, newest first, refreshed every few seconds.  ?console= and ?kind= in the page
// URL preset the filters (the log page links here with them).
"use strict";
(function () {
  const POLL_MS = 5000;
  const rows = document.getElementById("rows");
  const byConsole = document.getElementById("ev-console");
  const byKind = document.getElementById("ev-kind");
  const status = document.getElementById("status");
  const presets = document.querySelectorAll(".ev-preset");
  const KIND_CLASS = {"panic": "state-bad", "sol-down": "state-bad", "stolen": "state-bad",
                      "log-error": "state-bad", "sol-up": "state-good"};
  let timer = null;
  let latest = 0;  // the newest load(): an older answer that comes later is dropped

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v; else e.setAttribute(k, v);
    }
    for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return e;
  }

  function consoleUrl(name, suffix) {
    return "/consoles/" + encodeURIComponent(name) + (suffix || "");
  }

  // The words of one event; a panic gets its kernel lines and a link into the log.
  function details(ev) {
    const td = el("td");
    const text = ev.message || ev.line || "";
    if (ev.kind === "panic" && ev.console) {
      td.append(el("a", {href: consoleUrl(ev.console, "/log?q=" + encodeURIComponent(text.slice(0, 200))),
                         title: "Find this line in the console log"}, text || "kernel panic"));
      if (Array.isArray(ev.context) && ev.context.length) {
        const more = el("details", {}, el("summary", {}, ev.context.length + " lines of context"));
        more.append(el("pre", {class: "log"}, ev.context.join("\n")));
        td.append(more);
      }
      if (ev.bundle) {
        td.append(" ", el("a", {href: "/bundles/" + encodeURIComponent(ev.bundle), class: "bundle-link",
                                title: "The BMC's event log, chassis status and screen at the panic"},
                          "panic bundle"));
      }
    } else {
      td.append(text);
    }
    const extra = [];
    if (ev.user) extra.push("by " + ev.user);
    if (ev.severity && ev.severity !== "info") extra.push(ev.severity);
    if (ev.action && ev.kind !== "power") extra.push(ev.action);
    if (ev.member) extra.push("on " + ev.member);
    if (extra.length) td.append(el("span", {class: "detail"}, " · " + extra.join(" · ")));
    return td;
  }

  function render(events) {
    const frag = document.createDocumentFragment();
    for (const ev of events) {
      const when = typeof ev.time === "number" ? new Date(ev.time * 1000) : new Date(ev.time);
      const time = el("td", {title: String(ev.time || "")},
                      isNaN(when) ? String(ev.time || "") : when.toLocaleString());
      const name = el("td");
      if (ev.console) name.append(el("a", {href: consoleUrl(ev.console)}, ev.console));
      const kind = el("td", {class: KIND_CLASS[ev.kind] || ""}, ev.kind || "");
      frag.append(el("tr", {class: "ev-" + (ev.kind || "other")}, time, name, kind, details(ev)));
    }
    if (!events.length) frag.append(el("tr", {}, el("td", {colspan: "4", class: "muted"}, "No events.")));
    rows.replaceChildren(frag);
  }

  function syncUrl() {
    const q = new URLSearchParams();
    if (byConsole.value) q.set("console", byConsole.value);
    if (byKind.value) q.set("kind", byKind.value);
    history.replaceState(null, "", q.toString() ? "?" + q : location.pathname);
    for (const b of presets) b.classList.toggle("active", b.dataset.kind === byKind.value);
  }

  async function load() {
    clearTimeout(timer);
    const mine = ++latest;
    const q = new URLSearchParams({limit: "500"});
    if (byConsole.value) q.set("console", byConsole.value.trim());
    if (byKind.value) q.set("kind", byKind.value.replace(/\s+/g, ""));
    try {
      const r = await fetch("/api/events?" + q, {credentials: "same-origin"});
      if (r.status === 401) { location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search); return; }
      if (!r.ok) throw new Error("HTTP " + r.status);
      const events = (await r.json()).events;
      // Leaving the console box and clicking a preset start two loads: the old filter's
      // answer must not replace the new one's if it comes second.
      if (mine !== latest) return;
      render(events);
      status.textContent = "";
    } catch (e) {
      if (mine !== latest) return;
      status.textContent = "cannot load events (" + e.message + "); retrying";
    }
    timer = setTimeout(load, POLL_MS);
  }

  const params = new URLSearchParams(location.search);
  byConsole.value = params.get("console") || "";
  byKind.value = params.get("kind") || "";
  for (const b of presets) {
    b.addEventListener("click", function () { byKind.value = b.dataset.kind; syncUrl(); load(); });
  }
  for (const input of [byConsole, byKind]) {
    input.addEventListener("change", function () { syncUrl(); load(); });
  }
  syncUrl();
  load();
})();
