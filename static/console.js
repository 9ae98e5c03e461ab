// One console in the browser: xterm.js over /ws/consoles/{name}.
// The protocol is in docs/websocket-protocol.md.  Keyboard bytes go to the server
// untouched; the server's escape parser handles "~." and friends, so every front
// end behaves alike.  A dropped connection is retried with backoff and the server
// repaints the screen from its snapshot on every (re)attach.
"use strict";
(function () {
  const root = document.getElementById("console");
  const name = root.dataset.console;
  const me = root.dataset.user;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const $ = (id) => document.getElementById(id);
  const CLOSE_DETACHED = 4000;
  const CLOSE_IDLE = 4002;
  const enc = new TextEncoder();

  const term = new Terminal({
    scrollback: 10000, cursorBlink: true, allowProposedApi: false,
    fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace', fontSize: 14,
  });
  const fit = new FitAddon.FitAddon();
  const search = new SearchAddon.SearchAddon();
  term.loadAddon(fit);
  term.loadAddon(search);
  term.loadAddon(new WebLinksAddon.WebLinksAddon(function (event, uri) {
    const w = window.open(uri, "_blank", "noopener,noreferrer");
    if (w) w.opener = null;
  }));
  term.open($("terminal"));
  fit.fit();
  term.focus();

  let ws = null;
  let canWrite = false;
  let snapshotNext = false;
  let attempts = 0;
  let reconnectTimer = null;
  let messageTimer = null;
  let leaving = false;

  function message(text) {
    $("message").textContent = text;
    clearTimeout(messageTimer);
    if (text) messageTimer = setTimeout(() => { $("message").textContent = ""; }, 8000);
  }

  function banner(text, bad) {
    const b = $("banner");
    b.hidden = !text;
    b.textContent = text || "";
    b.className = "banner" + (bad ? " bad" : "");
    fit.fit();
  }

  function badge(id, text, kind) {
    const b = $(id);
    b.textContent = text;
    b.className = "badge" + (kind ? " " + kind : "");
  }

  function showState(state, detail) {
    badge("state", state, state === "active" ? "good" : "bad");
    $("state").title = detail || "";
    if (state !== "active" && detail) message(name + ": " + detail);
  }

  function showLock(holder) {
    if (!canWrite) badge("lock", holder ? "read-only · " + holder + " types" : "read-only", "");
    else if (holder === me) badge("lock", "you type", "good");
    else badge("lock", holder ? holder + " types" : "nobody types", "warn");
    const take = $("take-write");
    if (take) take.disabled = holder === me;
  }

  function send(obj) {
    if (ws && ws.readyState === WebSocket.OPEN) { ws.send(JSON.stringify(obj)); return true; }
    message("not connected");
    return false;
  }

  function connect() {
    clearTimeout(reconnectTimer);
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const url = proto + "//" + location.host + "/ws/consoles/" + encodeURIComponent(name) +
      "?cols=" + term.cols + "&rows=" + term.rows;
    badge("conn", "connecting…", "warn");
    ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    ws.onopen = function () {
      attempts = 0;
      badge("conn", "live", "good");
      banner("");
      send({type: "resize", cols: term.cols, rows: term.rows});
    };
    ws.onmessage = function (ev) {
      if (typeof ev.data !== "string") {
        const bytes = new Uint8Array(ev.data);
        if (snapshotNext) { snapshotNext = false; term.reset(); }
        term.write(bytes);
        return;
      }
      let m;
      try { m = JSON.parse(ev.data); } catch (e) { return; }
      switch (m.type) {
        case "hello":
          canWrite = !!m.can_write;
          showState(m.state, m.state_detail);
          showLock(m.writer);
          break;
        case "snapshot": snapshotNext = true; break;
        case "lagged":
          message("this view fell behind; " + m.dropped + " bytes skipped, screen redrawn (the log has everything)");
          break;
        case "state": showState(m.state, m.detail); break;
        case "write-lock": showLock(m.holder); break;
        case "access":  // a logout or a reload took the right to type away
          canWrite = !!m.can_write;
          showLock(null);
          message("read-only now: " + m.reason);
          break;
        case "error": message(m.message); break;
        case "closed": message("console closed: " + m.reason); break;
      }
    };
    ws.onclose = function (ev) {
      ws = null;
      if (leaving) return;
      if (ev.code === CLOSE_DETACHED) {
        badge("conn", "detached", "");
        banner("Detached (~.). Going back to the console list…");
        location.href = "/";
        return;
      }
      if (ev.code === CLOSE_IDLE) {
        badge("conn", "idle", "");
        banner("Detached: " + (ev.reason || "idle without input") +
               " (reload the page to attach again).", true);
        return;
      }
      if (ev.code === 1008 || ev.code === 4003) {
        badge("conn", "refused", "bad");
        banner("The server refused this console: " + (ev.reason || "log in again") + ".", true);
        return;
      }
      const delay = Math.min(15, 2 ** attempts) * (0.75 + Math.random() * 0.5);
      attempts += 1;
      badge("conn", "offline", "bad");
      banner("Connection to solgate lost" + (ev.reason ? " (" + ev.reason + ")" : "") +
             "; reconnecting in " + Math.ceil(delay) + " s. Output is still being logged.", true);
      reconnectTimer = setTimeout(checkThenConnect, delay * 1000);
    };
  }

  // A failed upgrade looks the same as a dropped socket; ask the API whether we are
  // still logged in before trying again, so an expired session goes to the login page.
  async function checkThenConnect() {
    try {
      const r = await fetch("/api/consoles/" + encodeURIComponent(name), {credentials: "same-origin"});
      if (r.status === 401) { location.href = "/login?next=" + encodeURIComponent(location.pathname); return; }
      if (r.status === 404) { banner("Console " + name + " no longer exists.", true); return; }
      await r.text();  // drain it: an unread no-store answer stays open until the page leaves
    } catch (e) { /* server down: the socket attempt will fail and back off */ }
    connect();
  }

  term.onData(function (data) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(enc.encode(data));
  });
  term.onBinary(function (data) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    const bytes = new Uint8Array(data.length);
    for (let i = 0; i < data.length; i++) bytes[i] = data.charCodeAt(i) & 0xff;
    ws.send(bytes);
  });
  term.onResize(function (size) { send({type: "resize", cols: size.cols, rows: size.rows}); });
  window.addEventListener("resize", function () { fit.fit(); });

  async function post(path, body) {
    const r = await fetch("/api/consoles/" + encodeURIComponent(name) + path, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
      body: JSON.stringify(body || {}),
    });
    let data = {};
    try { data = await r.json(); } catch (e) { /* empty body */ }
    if (!r.ok) throw new Error(data.error || "HTTP " + r.status);
    return data;
  }

  function on(id, fn) { const e = $(id); if (e) e.addEventListener("click", fn); }
  on("take-write", () => { send({type: "take-write"}); term.focus(); });
  on("break", () => { if (send({type: "break"})) message("BREAK sent"); term.focus(); });
  on("sysrq", function () {
    const sel = $("sysrq-key");
    const label = sel.options[sel.selectedIndex].text;
    if (!confirm("Send BREAK, then SysRq-" + label + " to " + name + "?")) return;
    if (send({type: "sysrq", key: sel.value})) message("SysRq-" + sel.value + " sent");
    term.focus();
  });
  on("deactivate", async function () {
    if (!confirm("Force the BMC of " + name + " to drop its SOL session, then reconnect?\n" +
                 "Anyone else on this console's SOL (BMC web page, ipmitool) is kicked off.")) return;
    try { await post("/deactivate"); message("SOL deactivated; reconnecting"); }
    catch (e) { message("reconnect failed: " + e.message); }
  });
  on("power", async function () {
    const action = $("power-action").value;
    if (action !== "status" && !confirm("Power " + action + " " + name + "? This affects the running host.")) return;
    message("power " + action + "…");
    try { const r = await post("/power", {action: action}); message("power " + action + ": " + r.result); }
    catch (e) { message("power " + action + " failed: " + e.message); }
  });

  function find(back) {
    const q = $("search").value;
    if (!q) return;
    const found = back ? search.findPrevious(q) : search.findNext(q);
    if (!found) message("no match for " + JSON.stringify(q));
  }
  $("search").addEventListener("keydown", function (ev) {
    if (ev.key === "Enter") { ev.preventDefault(); find(ev.shiftKey); }
    if (ev.key === "Escape") { term.clearSelection(); term.focus(); }
  });
  on("search-next", () => find(false));
  on("search-prev", () => find(true));

  window.addEventListener("beforeunload", function () { leaving = true; });
  connect();
})();
