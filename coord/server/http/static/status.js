// coord status page: renders /api/status, kept live by /api/stream (Server-Sent Events),
// polling /api/status while the stream is down.
//
// Where the node requires credentials, its data needs a bearer token: open the page as
// .../#token=<token> (any role). The token is kept in this tab's sessionStorage, taken
// out of the address bar, and sent as an Authorization header (so the stream is read
// with fetch: EventSource cannot send headers).
//
// Everything shown comes from the cluster, and member ids, addresses, health details and
// group names come from its clients: it goes into the DOM only as text nodes and
// attribute values (never innerHTML), so no value can become markup or script.
"use strict";

(() => {
  const POLL_MS = 1000; // while the stream is down
  const STREAM_RETRY_MS = 3000; // try the stream again this long after it dropped
  const WINDOW_30D_S = 30 * 24 * 3600;
  const FAILOVER_EVENTS = new Set(["master_elected", "master_lost", "master_revoked",
    "stepdown_requested", "breaker_opened"]);

  const TOKEN_KEY = "coord-token";
  if (location.hash.startsWith("#token=")) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(location.hash.slice("#token=".length)));
    history.replaceState(null, "", location.pathname + location.search);
  }
  const token = sessionStorage.getItem(TOKEN_KEY) || "";
  const authHeaders = token ? { Authorization: `Bearer ${token}` } : {};

  let stream = null;
  let pollTimer = null;
  let retryTimer = null;
  let lastUpdate = 0;

  // -- DOM helpers (text only) ----------------------------------------------------------

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== undefined && v !== null && v !== false) e.setAttribute(k, String(v));
    }
    for (const c of children) {
      if (c === undefined || c === null || c === false) continue;
      e.append(c instanceof Node ? c : String(c)); // a string becomes a text node
    }
    return e;
  }

  function svg(tag, attrs, ...children) {
    const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    for (const c of children) e.append(c instanceof Node ? c : String(c));
    return e;
  }

  // int64 fields arrive as strings, and zero values are left out.
  const num = (x) => Number(x ?? 0);

  function duration(ms) {
    ms = Math.max(0, ms);
    if (ms < 1000) return `${Math.round(ms)} ms`;
    const s = ms / 1000;
    if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
    const h = Math.floor(m / 60);
    if (h < 48) return `${h} h ${m % 60} min`;
    return `${Math.floor(h / 24)} d ${h % 24} h`;
  }

  function clock(ms) {
    if (!ms) return "";
    const d = new Date(ms);
    const p = (n, w = 2) => String(n).padStart(w, "0");
    return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
  }

  function day(ms) {
    const d = new Date(ms);
    return `${d.toISOString().slice(0, 10)} ${clock(ms).slice(0, 8)}`;
  }

  // -- rendering ----------------------------------------------------------------------

  function renderSummary(st) {
    const leader = st.leader
      ? el("span", { id: "leader", "data-leader": st.leader }, st.leader)
      : el("span", { id: "leader", class: "bad", "data-leader": "" }, "none");
    document.getElementById("summary").replaceChildren(
      "leader ", leader,
      el("span", { class: "sep" }, "term ", el("b", { id: "term" }, st.term)),
      el("span", { class: "sep" }, "revision ", el("b", { id: "revision" }, st.revision)),
      el("span", { class: "sep muted" }, `served by ${st.node} (${st.role})`),
    );
  }

  function renderNodes(st) {
    const rows = (st.nodes || []).map((n) =>
      el("tr", { "data-node": n.id, class: n.leader ? "leader" : null },
        el("td", {}, el("b", {}, n.id), n.self ? el("span", { class: "muted" }, " (this page)") : null),
        el("td", {}, n.leader ? el("span", { class: "badge master" }, "leader") : "follower"),
        el("td", {}, n.connected ? el("span", { class: "ok" }, "connected")
          : el("span", { class: "bad" }, "unreachable")),
        el("td", { class: "mono" }, n.api),
        el("td", { class: "mono" }, n.raft)));
    document.querySelector("#nodes tbody").replaceChildren(...rows);
  }

  function memberRow(m) {
    const master = m.master;
    const role = master
      ? el("span", { class: master.revoked ? "badge revoked" : "badge master" },
        master.revoked ? "master (revoked)" : "master")
      : el("span", { class: "badge standby" }, "standby");
    const health = m.healthy
      ? el("span", { class: "ok" }, "healthy")
      : el("span", { class: "bad" }, "unhealthy");
    return el("tr", { "data-member": m.id, "data-role": m.role },
      el("td", { class: "member" }, el("b", {}, m.id)),
      el("td", { class: "role" }, role),
      el("td", { class: "slot num" }, master ? master.slot : ""),
      el("td", { class: "token num mono" }, master ? master.token : ""),
      el("td", { class: "health" }, health,
        m.health_detail ? el("span", { class: "muted detail" }, ` ${m.health_detail}`) : null),
      el("td", { class: "num" }, m.priority),
      el("td", { class: "position num mono" }, m.position == null ? ""
        : `${m.position}` + (m.lag ? ` (behind by ${m.lag})` : "")),
      el("td", { class: "mono" }, m.address || ""));
  }

  function timeline(av, nowMs) {
    const since = num(av.tracking_since_ms);
    if (!since) return el("p", { class: "muted" }, "no master yet: accounting starts with the first one");
    const lo = Math.max(since, nowMs - WINDOW_30D_S * 1000);
    const span = Math.max(1, nowMs - lo);
    const W = 1000;
    const bar = svg("svg", { class: "timeline", viewBox: `0 0 ${W} 20`, preserveAspectRatio: "none",
      role: "img", "aria-label": "outage timeline" },
    svg("rect", { x: 0, y: 0, width: W, height: 20, class: "up" }));
    for (const o of av.timeline || []) {
      const start = Math.max(lo, num(o.start_ms));
      const end = o.end_ms ? num(o.end_ms) : nowMs;
      const x = ((start - lo) / span) * W;
      const w = Math.max(2, ((end - start) / span) * W);
      const title = `${o.end_ms ? "outage" : "outage (open)"}: ${duration(end - num(o.start_ms))}` +
        `, ${o.cause || "?"}, slot ${num(o.slot)}, member ${o.member || "?"}, revision ${num(o.revision)}`;
      bar.append(svg("rect", { x, y: 0, width: w, height: 20, class: o.end_ms ? "down" : "down open" },
        svg("title", {}, title)));
    }
    const outages = (av.timeline || []).slice(-5).reverse().map((o) => {
      const end = o.end_ms ? num(o.end_ms) : nowMs;
      return el("li", { class: o.end_ms ? null : "bad" },
        `${day(num(o.start_ms))}: ${duration(end - num(o.start_ms))}${o.end_ms ? "" : " (open)"}`,
        el("span", { class: "muted" }, ` ${o.cause || ""} · slot ${num(o.slot)} · ${o.member || ""}`));
    });
    return el("div", { class: "timeline-box" },
      el("div", { class: "axis muted" }, el("span", {}, day(lo)), el("span", {}, "now")),
      bar,
      outages.length ? el("ul", { class: "outages" }, ...outages)
        : el("p", { class: "muted" }, "no outage in the last 30 days"));
  }

  function budget(av) {
    const total = num(av.budget_ms_30d);
    if (!total) return el("p", { class: "muted budget" }, "no downtime budget set");
    const w = (av.windows || []).find((x) => num(x.window_s) === WINDOW_30D_S) || {};
    const remaining = num(w.budget_remaining_ms);
    const used = Math.min(1, Math.max(0, (total - remaining) / total));
    const meter = el("div", { class: "meter" },
      el("div", { class: remaining < 0 ? "fill spent" : used > 0.75 ? "fill warn" : "fill" }));
    meter.firstChild.style.width = `${(used * 100).toFixed(1)}%`;
    return el("div", { class: "budget", "data-remaining-ms": remaining },
      el("div", {}, "30-day budget: ",
        el("b", { class: remaining < 0 ? "bad" : "ok" },
          remaining < 0 ? `overspent by ${duration(-remaining)}` : `${duration(remaining)} left`),
        el("span", { class: "muted" }, ` of ${duration(total)}`)),
      meter);
  }

  function figures(av) {
    const label = { 3600: "1 h", 86400: "24 h", 2592000: "30 d" };
    const rows = (av.windows || []).map((w) => el("tr", {},
      el("td", {}, label[num(w.window_s)] || `${num(w.window_s)} s`),
      el("td", { class: "num" }, `${((1 - (w.ftsd || 0)) * 100).toFixed(4)} %`),
      el("td", { class: "num" }, duration(num(w.downtime_ms))),
      el("td", { class: "num" }, num(w.outages)),
      el("td", { class: "num" }, w.mttr_ms ? duration(w.mttr_ms) : "–")));
    return el("table", { class: "grid figures" },
      el("thead", {}, el("tr", {}, el("th", {}, "window"), el("th", {}, "available"),
        el("th", {}, "downtime"), el("th", {}, "outages"), el("th", {}, "MTTR"))),
      el("tbody", {}, ...rows));
  }

  // A paused group (maintenance mode): since when, until when (an estimate), why.
  function pausedTitle(p) {
    const since = new Date(Number(p.paused_time_ms || 0)).toLocaleString();
    const until = Number(p.wait_ms || 0)
      ? `until about ${new Date(Number(p.until_estimate_ms)).toLocaleString()}`
      : "until resumed";
    return `paused since ${since}, ${until}` + (p.reason ? ` (${p.reason})` : "");
  }

  // Switchovers scheduled for later (coordctl switchover GROUP --at TIME).
  function scheduledList(g) {
    const items = g.scheduled || [];
    if (!items.length) return null;
    return el("ul", { class: "scheduled" }, ...items.map((s) => {
      const to = s.to_member || "the best candidate";
      const at = new Date(num(s.at_ms)).toLocaleString();
      return el("li", { "data-id": num(s.id) }, `scheduled switchover ${num(s.id)} to ${to} at ${at}`);
    }));
  }

  // The failover breaker: open (it paused the group) or closed, and its rule.
  function breakerBadge(g) {
    const b = g.breaker;
    if (!b) return null;
    const rule = `${num(b.failovers)} automatic failovers within ${num(b.window_ms) / 1000}s`;
    return b.open
      ? el("span", { class: "badge bad-badge breaker-open",
        title: `breaker open (${rule}): automatic failover is paused until an operator ` +
          "resumes the group" }, "breaker open")
      : el("span", { class: "badge ok-badge breaker", title: `failover breaker: pauses the ` +
        `group after ${rule}; ${num(b.counted)} counted` }, "breaker");
  }

  // The spread rule (at most K masters per value of a member tag, over a family):
  // violated while more masters share a value than it allows.
  function spreadBadge(g) {
    const sp = g.spread;
    if (!sp) return null;
    const per = (sp.masters || []).map((v) =>
      `${v.value ? `${sp.tag}=${v.value}` : `no ${sp.tag} tag`}: ${num(v.masters)}`).join(", ");
    return num(sp.excess) > 0
      ? el("span", { class: "badge bad-badge spread-violated",
        title: `spread violated (${sp.rule}): ${per}; coordctl rebalance ${g.name} restores it` },
        "spread violated")
      : el("span", { class: "badge ok-badge spread", title: `spread holds (${sp.rule}): ${per || "no masters"}` },
        "spread");
  }

  function renderGroup(g, nowMs) {
    const members = g.members || [];
    const masters = members.filter((m) => m.master).sort((a, b) => a.master.slot - b.master.slot);
    const standbys = members.filter((m) => !m.master);
    const serving = masters.filter((m) => !m.master.revoked).length;
    const av = g.availability || {};
    const state = serving >= g.slots
      ? el("span", { class: "badge ok-badge" }, `${serving}/${g.slots} masters`)
      : el("span", { class: "badge bad-badge" }, `${serving}/${g.slots} masters`);
    return el("section", { class: "group", "data-group": g.name },
      el("h3", {}, g.name, " ", state,
        av.outage_open ? el("span", { class: "badge bad-badge" }, "outage") : null,
        g.paused && !(g.breaker && g.breaker.open)
          ? el("span", { class: "badge bad-badge paused", title: pausedTitle(g.paused) },
            "paused") : null,
        breakerBadge(g),
        spreadBadge(g)),
      el("div", { class: "cols" },
        el("div", { class: "col" },
          el("table", { class: "grid members" },
            el("thead", {}, el("tr", {}, ...["member", "role", "slot", "fencing token", "health",
              "priority", "position", "address"].map((h) => el("th", {}, h)))),
            el("tbody", {}, ...[...masters, ...standbys].map(memberRow),
              members.length ? null : el("tr", {}, el("td", { colspan: 8, class: "muted" }, "no members"))))),
        el("div", { class: "col" },
          scheduledList(g),
          budget(av),
          timeline(av, nowMs),
          figures(av))));
  }

  function renderGroups(st) {
    const groups = st.groups || [];
    const box = document.getElementById("groups");
    if (!groups.length) {
      box.replaceChildren(el("p", { class: "muted" }, "no groups yet"));
      return;
    }
    box.replaceChildren(...groups.map((g) => renderGroup(g, st.now_ms)));
  }

  function renderEvents(st) {
    const rows = (st.events || []).slice().reverse().map((e) =>
      el("tr", { "data-revision": num(e.revision), "data-type": e.type,
        class: FAILOVER_EVENTS.has(e.type) ? "failover" : null },
      el("td", { class: "num" }, num(e.revision)),
      el("td", { class: "mono" }, clock(num(e.time_ms))),
      el("td", {}, e.type),
      el("td", {}, e.group || ""),
      el("td", {}, e.member || ""),
      el("td", { class: "num" }, e.group && FAILOVER_EVENTS.has(e.type) ? num(e.slot) : ""),
      el("td", { class: "num mono" }, e.token ? num(e.token) : ""),
      el("td", {}, e.cause || "")));
    document.querySelector("#events tbody").replaceChildren(...rows);
  }

  function render(st) {
    renderSummary(st);
    renderNodes(st);
    renderGroups(st);
    renderEvents(st);
    lastUpdate = Date.now();
    // For tests and scripts: what is on screen, and since when.
    document.body.dataset.revision = String(st.revision);
    document.body.dataset.renderedAt = String(lastUpdate);
  }

  // -- transport: the stream, and polling while it is down ------------------------------

  function setConn(mode, text) {
    const c = document.getElementById("conn");
    c.className = `conn conn-${mode}`;
    c.dataset.mode = mode;
    c.textContent = text;
  }

  function show(st, via) {
    try {
      render(st);
      setConn(via === "stream" ? "live" : "polling",
        via === "stream" ? "live" : `polling (stream down) · ${clock(lastUpdate)}`);
    } catch (err) {
      setConn("offline", `cannot show the status: ${err}`);
    }
  }

  async function poll() {
    try {
      const r = await fetch("api/status", { cache: "no-store", headers: authHeaders });
      if (r.status === 401) {
        setConn("offline", token
          ? "this node refused the token: open the page as …/#token=<a valid token>"
          : "this node wants a token: open the page as …/#token=<token>");
        return;
      }
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      show(await r.json(), "poll");
    } catch (err) {
      setConn("offline", `node unreachable (${err.message || err}) · last update ${clock(lastUpdate) || "never"}`);
    }
  }

  function startPolling() {
    if (pollTimer === null) {
      pollTimer = setInterval(poll, POLL_MS);
      poll();
    }
  }

  function stopPolling() {
    if (pollTimer !== null) {
      clearInterval(pollTimer);
      pollTimer = null;
    }
  }

  function streamDown() {
    // Poll until the stream is back: a browser's own reconnect can take long, and a
    // proxy may have cut the stream while plain requests still work.
    if (stream !== null) stream.close();
    stream = null;
    startPolling();
    if (retryTimer === null) retryTimer = setTimeout(startStream, STREAM_RETRY_MS);
  }

  function onStatus(data) {
    stopPolling();
    show(JSON.parse(data), "stream");
  }

  // The stream read with fetch, for the Authorization header: "event: status" blocks.
  async function fetchStream() {
    const abort = new AbortController();
    const mine = { close: () => abort.abort() };
    stream = mine;
    try {
      const r = await fetch("api/stream", { cache: "no-store", headers: authHeaders,
        signal: abort.signal });
      if (!r.ok || !r.body) throw new Error(`HTTP ${r.status}`);
      const reader = r.body.getReader();
      const decoder = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) throw new Error("the stream ended");
        buf += decoder.decode(value, { stream: true });
        let end;
        while ((end = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, end);
          buf = buf.slice(end + 2);
          let kind = "message";
          const data = [];
          for (const line of block.split("\n")) {
            if (line.startsWith("event:")) kind = line.slice(6).trim();
            else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
          }
          if (kind === "status" && data.length) onStatus(data.join("\n"));
        }
      }
    } catch (err) {
      if (stream === mine) streamDown();
    }
  }

  function startStream() {
    retryTimer = null;
    if (token) {
      fetchStream();
      return;
    }
    if (!window.EventSource) {
      startPolling();
      return;
    }
    stream = new EventSource("api/stream");
    stream.addEventListener("status", (ev) => onStatus(ev.data));
    stream.onerror = streamDown;
  }

  poll();
  startStream();
})();
