// The console list: polls /api/consoles and filters locally; no framework.
"use strict";
(function () {
  const POLL_MS = 3000;
  const rows = document.getElementById("rows");
  const filter = document.getElementById("filter");
  const summary = document.getElementById("summary");
  const status = document.getElementById("status");
  let consoles = [];
  let shownNames = [];
  const selected = new Set();  // console names ticked for a fleet action

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

  // A glob (* ? [...]) as a RegExp over the whole name, as Python's fnmatch reads it.
  function globRe(glob) {
    let re = "";
    for (let i = 0; i < glob.length; i++) {
      const ch = glob[i];
      if (ch === "*") re += ".*";
      else if (ch === "?") re += ".";
      else if (ch === "[" && glob.indexOf("]", i + 2) > 0) {
        const end = glob.indexOf("]", i + 2);
        let set = glob.slice(i + 1, end).replace(/\\/g, "\\\\");
        if (set[0] === "!") set = "^" + set.slice(1);
        re += "[" + set + "]";
        i = end;
      } else re += ch.replace(/[.+^${}()|\\\]\[]/g, "\\$&");
    }
    return new RegExp("^" + re + "$", "s");
  }

  // Filter words all have to match: "tag:x", "state:x", "panic", "bad", a glob over
  // the whole name, or part of the name (solgate/selection.py reads them the same way).
  function matches(c, words) {
    return words.every(function (w) {
      if (w.startsWith("tag:")) return c.tags.some((t) => t.toLowerCase() === w.slice(4));
      if (w.startsWith("state:")) return (c.state + " " + c.state_words).toLowerCase().includes(w.slice(6));
      if (w === "panic") return c.panic_count > 0;
      if (w === "bad") return !c.healthy;
      if (/[*?[]/.test(w)) return globRe(w).test(c.name.toLowerCase());
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
      if (c.member) state.append(el("div", {class: "detail member"}, "on " + c.member));
      state.title = c.state + " for " + ago(c.state_age).replace(" ago", "");
      const panics = el("td", {class: "num"});
      if (c.panic_count > 0) panics.append(el("span", {class: "panic", title: "kernel panics seen"}, c.panic_count));
      const tags = el("td");
      for (const t of c.tags) tags.append(el("span", {class: "tag"}, t));
      const picks = [];  // the fleet checkbox: only for users who may act on consoles
      if (bar) {
        const tick = el("input", {type: "checkbox", class: "pick", "aria-label": "Select " + c.name});
        tick.checked = selected.has(c.name);
        tick.addEventListener("change", function () {
          if (tick.checked) selected.add(c.name); else selected.delete(c.name);
          updateBar();
        });
        picks.push(el("td", {}, tick));
      }
      frag.append(el("tr", {"data-name": c.name},
        ...picks,
        el("td", {}, el("a", {href: "/consoles/" + encodeURIComponent(c.name)}, c.name)),
        state,
        el("td", {title: c.last_output ? new Date(c.last_output * 1000).toLocaleString() : ""},
           ago(c.last_output_age)),
        el("td", {class: "num"}, c.viewers),
        el("td", {}, c.writer || ""),
        panics,
        tags));
    }
    if (!shown.length) frag.append(el("tr", {}, el("td", {colspan: bar ? "8" : "7", class: "muted"},
      consoles.length ? "No console matches the filter." : "No consoles you may see.")));
    rows.replaceChildren(frag);
    shownNames = shown.map((c) => c.name);
    const known = new Set(consoles.map((c) => c.name));
    for (const name of Array.from(selected)) if (!known.has(name)) selected.delete(name);
    updateBar();
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

  // --- fleet actions: ticked consoles, one action, a typed count, a results table ---
  // (none of it on the page for a viewer, who may act on no console)
  const bar = document.getElementById("fleetbar");
  const selectAll = document.getElementById("select-all");
  const actionSel = document.getElementById("fleet-action");
  const argInput = document.getElementById("fleet-arg");
  const dialog = document.getElementById("fleet-confirm");
  const typed = document.getElementById("fleet-typed");
  const runBtn = document.getElementById("fleet-run");
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  let pending = null;  // the request the dialog will run, and the count to type

  function updateBar() {
    if (!bar) return;
    bar.hidden = selected.size === 0;
    document.getElementById("fleet-count").textContent = selected.size + " selected";
    selectAll.checked = shownNames.length > 0 && shownNames.every((n) => selected.has(n));
  }

  selectAll?.addEventListener("change", function () {
    for (const n of shownNames) { if (selectAll.checked) selected.add(n); else selected.delete(n); }
    render();
  });
  document.getElementById("fleet-clear")?.addEventListener("click", function () {
    selected.clear();
    render();
  });
  actionSel?.addEventListener("change", function () {
    const v = actionSel.value;
    argInput.hidden = !(v === "sysrq" || v === "broadcast");
    argInput.placeholder = v === "sysrq" ? "SysRq key, e.g. s" : "text (Enter is added)";
  });

  // Exact names as fnmatch globs: a [ ] * ? in a name must not select others.
  function literal(name) { return name.replace(/[[*?]/g, (ch) => "[" + ch + "]"); }

  function request() {
    const [action, power] = actionSel.value.split(":");
    const args = {};
    if (action === "power") args.power = power;
    if (action === "sysrq") args.key = argInput.value.trim();
    if (action === "broadcast") { args.text = argInput.value; args.line = true; }
    return {selection: {consoles: Array.from(selected).map(literal)}, action: action, args: args};
  }

  async function post(body) {
    const r = await fetch("/api/fleet", {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf, Accept: "application/json"},
      body: JSON.stringify(body)});
    return r;
  }

  bar?.addEventListener("submit", async function (ev) {
    ev.preventDefault();
    const body = request();
    const r = await post({...body, dry_run: true});
    const plan = await r.json();
    if (!r.ok) { status.textContent = plan.error || ("HTTP " + r.status); return; }
    const n = plan.would_touch.length;
    pending = {body: body, count: n};
    document.getElementById("fleet-plan").textContent = plan.action + " on " + n +
      " console" + (n === 1 ? "" : "s") + (plan.refused.length ? " (" + plan.refused.length + " refused)" : "") + ".";
    const refused = document.getElementById("fleet-refused");
    refused.replaceChildren(...plan.refused.map((x) => el("li", {}, x.console + ": " + x.detail)));
    typed.value = "";
    runBtn.disabled = true;
    dialog.showModal();
    typed.focus();
  });
  typed?.addEventListener("input", function () {
    runBtn.disabled = !pending || typed.value.trim() !== String(pending.count);
  });
  runBtn?.addEventListener("click", async function () {
    if (!pending || typed.value.trim() !== String(pending.count)) return;
    dialog.close();
    const {body, count} = pending;
    pending = null;
    await run({...body, confirm_count: count, stream: true});
  });

  function showResults(result) {
    const frag = document.createDocumentFragment();
    for (const r of result.results) {
      frag.append(el("tr", {class: "result-" + r.status},
        el("td", {}, r.console), el("td", {}, r.status), el("td", {}, r.detail)));
    }
    document.getElementById("fleet-rows").replaceChildren(frag);
    const s = result.summary;
    document.getElementById("fleet-summary").textContent = result.action + ": " + s.total +
      " consoles: " + s.done + " done, " + s.refused + " refused" +
      (s.unseen ? " (" + s.unseen + " outside your access list)" : "") + ", " + s.error + " failed";
  }

  async function run(body) {
    const section = document.getElementById("fleet-results");
    const progress = document.getElementById("fleet-progress");
    section.hidden = false;
    progress.hidden = false;
    progress.value = 0;
    document.getElementById("fleet-summary").textContent = "running…";
    document.getElementById("fleet-rows").replaceChildren();
    const r = await post(body);
    if (!r.ok) {
      const e = await r.json().catch(() => ({}));
      document.getElementById("fleet-summary").textContent = e.error || ("HTTP " + r.status);
      return;
    }
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (value) buffer += decoder.decode(value, {stream: true});
      let nl;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, nl).trim();
        buffer = buffer.slice(nl + 1);
        if (!line) continue;
        const item = JSON.parse(line);
        if (item.progress) { progress.max = item.total; progress.value = item.done; }
        if (item.result) { progress.hidden = true; showResults(item.result); }
      }
      if (done) break;
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
