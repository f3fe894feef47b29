// daemonhost UI: one WebSocket speaking the socket protocol (docs/PROTOCOL.md), two pages.
// No build step, no network beyond this host.
"use strict";

const params = new URLSearchParams(location.search);
const token = params.get("token");
if (token) {
  // The server set its cookie when this page was fetched with the token; keep the token out of
  // the address bar (and out of screenshots and history).
  params.delete("token");
  const rest = params.toString();
  history.replaceState(null, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
}

const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};

// ---- the connection -------------------------------------------------------------------------

class Host {
  constructor() {
    this.nextId = 1;
    this.pending = new Map(); // id -> {resolve, reject, timer}
    this.subs = new Map(); // subscription -> handler
    this.ws = null;
    this.backoff = 250;
    this.onopen = () => {};
  }
  connect() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const q = token ? "?token=" + encodeURIComponent(token) : "";
    const ws = new WebSocket(`${proto}//${location.host}/ws${q}`);
    this.ws = ws;
    setConn("connecting…", "");
    ws.onopen = () => {
      this.backoff = 250;
      setConn("connected", "ok");
      this.onopen();
    };
    ws.onmessage = (m) => this.receive(m.data);
    ws.onclose = () => {
      setConn("disconnected — retrying", "bad");
      for (const [, p] of this.pending) {
        clearTimeout(p.timer);
        p.reject(new Error("connection closed"));
      }
      this.pending.clear();
      this.subs.clear();
      setTimeout(() => this.connect(), this.backoff);
      this.backoff = Math.min(this.backoff * 2, 5000);
    };
  }
  receive(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    if (msg.type === "response") {
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      clearTimeout(p.timer);
      if (msg.success) p.resolve(msg.result ?? null);
      else p.reject(Object.assign(new Error(msg.error?.message ?? "error"), { code: msg.error?.code }));
    } else if (msg.type === "event") {
      const h = this.subs.get(msg.subscription);
      if (h) h(msg.topic, msg.data);
    }
  }
  call(command, params, timeoutMs = 10000) {
    return new Promise((resolve, reject) => {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN) {
        reject(new Error("not connected"));
        return;
      }
      const id = this.nextId++;
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${command}: no answer in ${timeoutMs} ms`));
      }, timeoutMs + 1000);
      this.pending.set(id, { resolve, reject, timer });
      const body = { type: "request", id, command };
      if (params && Object.keys(params).length) body.params = params;
      body.timeout_ms = timeoutMs;
      this.ws.send(JSON.stringify(body));
    });
  }
  // The subscription is registered while its response is handled, before the next message is
  // read: no event of it can be missed (PROTOCOL.md, Subscriptions).
  subscribe(pattern, handler) {
    return new Promise((resolve, reject) => {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN) {
        reject(new Error("not connected"));
        return;
      }
      const id = this.nextId++;
      this.pending.set(id, {
        resolve: (r) => {
          this.subs.set(r.subscription, handler);
          resolve(r.subscription);
        },
        reject,
        timer: setTimeout(() => reject(new Error("subscribe: no answer")), 10000),
      });
      this.ws.send(JSON.stringify({ type: "request", id, command: "events/subscribe", params: { pattern } }));
    });
  }
  unsubscribe(sub) {
    this.subs.delete(sub);
    return this.call("events/unsubscribe", { subscription: sub }).catch(() => {});
  }
}

function setConn(text, cls) {
  $("conn-text").textContent = text;
  $("conn-dot").className = "dot " + cls;
}

const host = new Host();

// ---- the browser console goes to the host's log (widget/console) -----------------------------

(function bridgeConsole() {
  let sending = false;
  let budget = 20; // lines per second at most
  setInterval(() => (budget = 20), 1000);
  for (const level of ["log", "info", "warn", "error"]) {
    const orig = console[level].bind(console);
    console[level] = (...args) => {
      orig(...args);
      if (sending || budget <= 0) return;
      budget--;
      sending = true;
      const message = args.map((a) => (typeof a === "string" ? a : safeJson(a))).join(" ").slice(0, 4000);
      host.call("widget/console", { level, message }).catch(() => {});
      sending = false;
    };
  }
  window.addEventListener("error", (e) => console.error(`${e.message} at ${e.filename}:${e.lineno}`));
})();

function safeJson(v) {
  try {
    return JSON.stringify(v);
  } catch {
    return String(v);
  }
}

// ---- pages ----------------------------------------------------------------------------------

let page = null;
function showPage() {
  const want = location.hash === "#host" ? "host" : "chat";
  for (const p of ["chat", "host"]) {
    $("page-" + p).hidden = p !== want;
    $("tab-" + p).classList.toggle("active", p === want);
  }
  if (page !== want) {
    page = want;
    if (want === "chat") chat.enter();
    else hostPage.enter();
  }
}
window.addEventListener("hashchange", showPage);

// ---- chat -----------------------------------------------------------------------------------

const fmtTime = (t) => {
  const d = new Date(t);
  return isNaN(d) ? "" : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
};
const textOf = (m) => (typeof m.content === "string" ? m.content : m.content?.text ?? safeJson(m.content));

const chat = {
  me: null,
  room: null,
  rooms: [],
  shown: new Set(),
  sub: null,
  timer: null,
  async enter() {
    if (host.ws?.readyState !== WebSocket.OPEN) return;
    await this.ensureMe();
    await this.loadRooms();
    if (!this.sub) {
      this.sub = await host.subscribe("data:chat_messages:created", (_t, m) => {
        if (m && this.room && m.roomId === this.room.id) this.append(m);
      });
    }
    clearInterval(this.timer);
    this.timer = setInterval(() => page === "chat" && this.personas(), 2000);
    this.personas();
  },
  async ensureMe() {
    const saved = safeParse(localStorage.getItem("daemonhost.me"));
    const name = $("me-name").value.trim() || saved?.name || "Guest";
    if (saved?.id && saved.name === name) {
      try {
        await host.call("user/get", { id: saved.id });
        this.me = saved;
        $("me-name").value = saved.name;
        return;
      } catch {
        /* gone: create again */
      }
    }
    const u = await host.call("user/create", { displayName: name, type: "human" });
    this.me = { id: u.id, name };
    localStorage.setItem("daemonhost.me", JSON.stringify(this.me));
    $("me-name").value = name;
  },
  async loadRooms() {
    const page = await host.call("room/list", { limit: 100 });
    this.rooms = page.items ?? [];
    const list = $("room-list");
    list.replaceChildren();
    for (const r of this.rooms) {
      const li = el("li", "", "# " + (r.displayName || r.name));
      li.dataset.id = r.id;
      li.onclick = () => this.open(r);
      list.append(li);
    }
    const want = this.room ? this.rooms.find((r) => r.id === this.room.id) : this.rooms.find((r) => r.name === "general");
    if (want || this.rooms[0]) await this.open(want || this.rooms[0]);
  },
  async open(room) {
    this.room = room;
    for (const li of $("room-list").children) li.classList.toggle("active", li.dataset.id === room.id);
    $("room-title").textContent = "# " + (room.displayName || room.name);
    await host.call("room/join", { room: room.id, userId: this.me.id }).catch(() => {});
    const h = await host.call("chat/history", { room: room.id, limit: 50 });
    this.shown.clear();
    $("messages").replaceChildren();
    for (const m of h.messages ?? []) this.append(m);
    const members = await host.call("room/members", { room: room.id }).catch(() => null);
    $("room-count").textContent = members ? `${(members.members ?? []).length} members` : "";
  },
  append(m) {
    if (this.shown.has(m.id)) return;
    this.shown.add(m.id);
    const box = $("messages");
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
    const kind = m.senderType === "persona" || m.senderType === "agent" ? "persona" : "human";
    const li = el("li", `msg ${kind}${m.senderId === this.me?.id ? " mine" : ""}`);
    li.dataset.id = m.id;
    li.dataset.sender = m.senderId;
    const name = m.senderName || (m.senderId === this.me?.id ? this.me.name : m.senderId?.slice(0, 8));
    li.append(el("div", "avatar", (name || "?").slice(0, 1).toUpperCase()));
    const body = el("div");
    const head = el("div");
    head.append(el("span", "who", name), el("span", "when", fmtTime(m.timestamp)));
    body.append(head, el("div", "text", textOf(m)));
    li.append(body);
    box.append(li);
    while (box.children.length > 500) box.firstChild.remove();
    if (atBottom) box.scrollTop = box.scrollHeight;
  },
  async send(text) {
    if (!this.room || !this.me) return;
    const m = await host.call("chat/send", {
      room: this.room.id,
      sender: this.me.id,
      message: text,
      clientMessageId: crypto.randomUUID ? crypto.randomUUID() : String(Date.now() + Math.random()),
    });
    this.append(m);
  },
  async personas() {
    let st;
    try {
      st = await host.call("persona/status", {});
    } catch {
      return;
    }
    const list = $("persona-list");
    list.replaceChildren();
    const all = st.personas ?? [];
    $("persona-empty").hidden = all.length > 0;
    for (const p of all) {
      const li = el("li", "persona");
      li.dataset.id = p.id;
      const row = el("div", "row");
      row.append(el("span", "name", p.name), el("span", "mood " + p.mood, p.mood));
      const bar = el("div", "bar");
      const fill = el("span");
      fill.style.width = Math.round((p.energy ?? 0) * 100) + "%";
      bar.append(fill);
      const stats = el("div", "stats");
      stats.append(
        el("span", "", `energy ${Math.round((p.energy ?? 0) * 100)}%`),
        el("span", "", `inbox ${p.inbox}`),
        el("span", "", `replies ${p.counters?.replies ?? 0}`),
      );
      li.append(row, bar, stats);
      list.append(li);
    }
  },
};

function safeParse(s) {
  try {
    return s ? JSON.parse(s) : null;
  } catch {
    return null;
  }
}

$("send-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const input = $("send-text");
  const text = input.value.trim();
  if (!text) return;
  $("send-button").disabled = true;
  try {
    await chat.send(text);
    input.value = "";
  } catch (err) {
    console.error("send failed: " + err.message);
  } finally {
    $("send-button").disabled = false;
    input.focus();
  }
});
$("me-name").addEventListener("change", () => chat.enter());

// ---- host -----------------------------------------------------------------------------------

const ms = (v) => (v == null ? "–" : v < 1 ? v.toFixed(3) + " ms" : v < 100 ? v.toFixed(1) + " ms" : Math.round(v) + " ms");
const mb = (b) => (b / 1048576).toFixed(1) + " MB";
const dur = (t) => {
  const s = Math.floor(t / 1000);
  return s < 120 ? s + " s" : s < 7200 ? Math.floor(s / 60) + " min" : Math.floor(s / 3600) + " h";
};

const hostPage = {
  timer: null,
  lag: [],
  sub: null,
  enter() {
    if (host.ws?.readyState !== WebSocket.OPEN) return;
    clearInterval(this.timer);
    this.timer = setInterval(() => page === "host" && this.refresh(), 1000);
    this.refresh();
    this.waterfall();
    if (!this.sub) this.follow($("tail-pattern").value);
  },
  async refresh() {
    let status, metrics, startup;
    try {
      [status, metrics, startup] = await Promise.all([
        host.call("health/status"),
        host.call("health/metrics"),
        host.call("system/startup"),
      ]);
    } catch {
      return;
    }
    const daemons = status.daemons ?? [];
    const ready = daemons.filter((d) => d.state === "ready").length;
    $("k-ready").textContent = `${ready} / ${daemons.length}`;
    $("k-allready").textContent = ms(startup.host?.all_ready_ms);
    $("k-uptime").textContent = dur(metrics.uptime_ms ?? 0);
    $("k-rss").textContent = mb(metrics.process?.rss_bytes ?? 0);
    $("k-bus").textContent = `${metrics.bus?.published ?? 0} / ${metrics.bus?.lagged ?? 0}`;
    const lag = metrics.lag ?? {};
    this.lag.push(lag.window_max_us ?? 0);
    if (this.lag.length > 120) this.lag.shift();
    $("k-lag").textContent = `p50 ${lag.p50_us ?? "–"} µs · p99 ${lag.p99_us ?? "–"} µs · max ${lag.max_us ?? "–"} µs`;
    this.spark();
    const rows = $("daemon-rows");
    rows.replaceChildren();
    for (const d of daemons) {
      const tr = el("tr");
      tr.dataset.daemon = d.name;
      const work = d.work ?? {};
      const runs = work.worker > 0 ? "worker process" : work.pool > 0 ? "in-process + pool" : "in-process";
      const cells = [
        el("td", "mono", d.name),
        el("td", "state " + d.state, d.state),
        el("td", "num", ms(d.core_init_ms)),
        el("td", "num", d.deferred === "done" ? ms(d.deferred_init_ms) : d.deferred ?? "–"),
        el("td", "num", String(d.queue_depth ?? 0)),
        el("td", "num", ms(d.longest_poll_ms)),
        el("td", "num", String(d.handled ?? 0)),
        el("td", "num", String(d.failed ?? 0)),
        el("td", "num", String(d.panics ?? 0)),
        el("td", "muted", runs),
      ];
      tr.append(...cells);
      rows.append(tr);
    }
  },
  spark() {
    const svg = $("lag-chart");
    const max = Math.max(1, ...this.lag);
    const pts = this.lag.map((v, i) => `${(i / 119) * 300},${58 - (v / max) * 54}`).join(" ");
    svg.replaceChildren();
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("points", pts);
    svg.append(line);
  },
  async waterfall() {
    const box = $("waterfall");
    try {
      const r = await fetch("/startup.svg", { credentials: "same-origin" });
      if (!r.ok) throw new Error("HTTP " + r.status);
      const svg = new DOMParser().parseFromString(await r.text(), "image/svg+xml").documentElement;
      if (svg.nodeName !== "svg") throw new Error("not an SVG");
      box.replaceChildren(document.importNode(svg, true));
      box.classList.remove("muted");
    } catch (e) {
      box.textContent = "The startup waterfall is not available: " + e.message;
    }
  },
  async follow(pattern) {
    if (this.sub) await host.unsubscribe(this.sub);
    this.sub = null;
    $("tail").replaceChildren();
    try {
      this.sub = await host.subscribe(pattern, (topic, data) => {
        const li = el("li");
        li.append(el("span", "topic", topic), el("span", "muted", safeJson(data).slice(0, 300)));
        const tail = $("tail");
        tail.prepend(li);
        while (tail.children.length > 200) tail.lastChild.remove();
      });
      $("tail-state").textContent = `following ${pattern}`;
    } catch (e) {
      $("tail-state").textContent = e.message;
    }
  },
};

$("tail-form").addEventListener("submit", (e) => {
  e.preventDefault();
  hostPage.follow($("tail-pattern").value.trim() || "data:*:*");
});

// ---- start ----------------------------------------------------------------------------------

host.onopen = () => {
  chat.sub = null;
  hostPage.sub = null;
  const p = page;
  page = null; // re-enter the current page on every (re)connect
  if (p === null) showPage();
  else {
    page = p;
    if (p === "chat") chat.enter();
    else hostPage.enter();
  }
};
host.connect();
showPage();
