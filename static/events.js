// The events page: the newest events first, refreshed every few seconds.
"use strict";
(function () {
  const rows = document.getElementById("rows");
  const byConsole = document.getElementById("ev-console");
  const byKind = document.getElementById("ev-kind");
  const status = document.getElementById("status");
  let timer = null;

  function cell(text, cls) {
    const td = document.createElement("td");
    if (cls) td.className = cls;
    td.textContent = text;
    return td;
  }

  async function load() {
    clearTimeout(timer);
    const q = new URLSearchParams({limit: "500"});
    if (byConsole.value) q.set("console", byConsole.value);
    if (byKind.value) q.set("kind", byKind.value);
    try {
      const r = await fetch("/api/events?" + q, {credentials: "same-origin"});
      if (r.status === 401) { location.href = "/login?next=/events"; return; }
      if (!r.ok) throw new Error("HTTP " + r.status);
      const events = (await r.json()).events;
      const frag = document.createDocumentFragment();
      for (const ev of events) {
        const tr = document.createElement("tr");
        const t = typeof ev.time === "number" ? new Date(ev.time * 1000).toLocaleString() : String(ev.time || "");
        const rest = Object.assign({}, ev);
        delete rest.time; delete rest.console; delete rest.kind;
        const name = ev.console || "";
        const link = document.createElement("td");
        if (name) {
          const a = document.createElement("a");
          a.href = "/consoles/" + encodeURIComponent(name);
          a.textContent = name;
          link.append(a);
        }
        tr.append(cell(t), link, cell(ev.kind || "", ev.kind === "panic" ? "state-bad" : ""),
                  cell(Object.keys(rest).length ? JSON.stringify(rest) : ""));
        frag.append(tr);
      }
      if (!events.length) {
        const tr = document.createElement("tr");
        const td = cell("No events.", "muted"); td.colSpan = 4; tr.append(td); frag.append(tr);
      }
      rows.replaceChildren(frag);
      status.textContent = "";
    } catch (e) {
      status.textContent = "cannot load events (" + e.message + "); retrying";
    }
    timer = setTimeout(load, 10000);
  }

  byConsole.addEventListener("change", load);
  byKind.addEventListener("change", load);
  load();
})();
