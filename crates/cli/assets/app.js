// The browser side of the web bridge: one WebSocket to /ws speaking the host's protocol
// (docs/PROTOCOL.md): each message is one JSON request, response or event.
"use strict";
(() => {
  const params = new URLSearchParams(location.search);
  const token = params.get("token");
  // The server answered this page with a cookie holding the token; keep it out of the address
  // bar (and out of bookmarks and screenshots) from now on.
  if (token) history.replaceState(null, "", location.pathname);
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const url = `${scheme}//${location.host}/ws` + (token ? `?token=${encodeURIComponent(token)}` : "");

  const $ = (id) => document.getElementById(id);
  const state = (text, cls) => { $("state").textContent = text; $("state").className = cls || ""; };
  const pending = new Map();
  let nextId = 1;
  let ws = null;

  function call(command, params) {
    return new Promise((resolve, reject) => {
      if (!ws || ws.readyState !== WebSocket.OPEN) return reject({ code: "unavailable", message: "not connected" });
      const id = nextId++;
      pending.set(id, { resolve, reject });
      ws.send(JSON.stringify({ type: "request", id, command, params: params || {} }));
    });
  }

  async function ping() {
    try {
      const result = await call("ping");
      $("answer").textContent = JSON.stringify(result, null, 2);
      state("connected", "ok");
    } catch (e) {
      $("answer").textContent = `${e.code}: ${e.message}`;
      state("error", "err");
    }
  }

  // Console lines the page writes go to the host's console daemon (widget/console).
  for (const level of ["warn", "error"]) {
    const orig = console[level].bind(console);
    console[level] = (...args) => {
      orig(...args);
      call("widget/console", { level, message: args.map(String).join(" ") }).catch(() => {});
    };
  }
  window.addEventListener("error", (e) => console.error(`${e.message} (${e.filename}:${e.lineno})`));

  function connect() {
    ws = new WebSocket(url);
    ws.onopen = () => { $("ping").disabled = false; ping(); };
    ws.onmessage = (m) => {
      let frame;
      try { frame = JSON.parse(m.data); } catch { return; }
      if (frame.type !== "response") return; // events would be dispatched here
      const p = pending.get(frame.id);
      if (p) {
        pending.delete(frame.id);
        frame.success ? p.resolve(frame.result) : p.reject(frame.error);
      } else if (frame.id === null && frame.error) {
        state(`${frame.error.code}: ${frame.error.message}`, "err");
      }
    };
    ws.onclose = () => {
      $("ping").disabled = true;
      for (const p of pending.values()) p.reject({ code: "unavailable", message: "connection closed" });
      pending.clear();
      state("disconnected; reconnecting…", "err");
      setTimeout(connect, 2000);
    };
  }
  $("ping").addEventListener("click", ping);
  connect();
})();
