// proxy-failover dashboard: vanilla JS over the public REST API and the SSE event stream.
//
// Rules this file keeps (docs/dashboard.md says why):
// - the token lives in sessionStorage and travels only in the Authorization header: never in a
//   URL, so it reaches no access log or Referer. /ui#token=... is read once and the fragment removed;
// - the event stream is read with fetch() and a stream reader (EventSource cannot send headers);
// - every piece of data is written with textContent / attributes, never parsed as HTML;
// - admin-ness is read from the token's claims for display only: the server enforces every rule.
"use strict";

(function () {
  const TOKEN_KEY = "pfo.token";
  const OVERVIEW_POLL_MS = 5000;
  // The stream wakes the page on notifications; this slower poll catches what sends none
  // (counters, admin-state changes by others, a proxy's config).
  const PROXY_POLL_MS = 10000;
  const FEED_MAX = 30;

  const $ = (id) => document.getElementById(id);

  // --- DOM helpers: text only ----------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function badge(text, kind) {
    return el("span", { class: "badge " + (kind || ""), text });
  }

  function show(section) {
    for (const id of ["signin", "overview", "proxy"]) $(id).hidden = id !== section;
  }

  function notice(message, kind) {
    const box = $("notice");
    box.textContent = message || "";
    box.className = "notice " + (kind || "error");
    box.hidden = !message;
  }

  function ago(iso) {
    if (!iso) return "never";
    const seconds = Math.round((Date.now() - Date.parse(iso)) / 1000);
    if (seconds < 2) return "just now";
    if (seconds < 90) return seconds + " s ago";
    if (seconds < 5400) return Math.round(seconds / 60) + " min ago";
    if (seconds < 129600) return Math.round(seconds / 3600) + " h ago";
    return new Date(iso).toISOString().slice(0, 16).replace("T", " ") + " UTC";
  }

  function time(iso) {
    return el("time", { datetime: iso || "", title: iso || "", text: ago(iso) });
  }

  // --- the token -----------------------------------------------------------------------------

  function claimsOf(token) {
    try {
      const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      const json = decodeURIComponent(
        Array.from(atob(part + "===".slice((part.length + 3) % 4)))
          .map((c) => "%" + c.charCodeAt(0).toString(16).padStart(2, "0"))
          .join(""),
      );
      const claims = JSON.parse(json);
      return claims && typeof claims === "object" ? claims : null;
    } catch (_error) {
      return null;
    }
  }

  const session = {
    token: null,
    claims: null,
    get isAdmin() {
      const c = this.claims || {};
      return c.role === "admin" || (Array.isArray(c.roles) && c.roles.includes("admin"));
    },
    set(token) {
      const claims = claimsOf(token);
      if (!claims) throw new Error("That is not a JWT (three base64url parts).");
      if (typeof claims.exp === "number" && claims.exp * 1000 < Date.now()) {
        throw new Error("That token has expired: mint a new one.");
      }
      this.token = token;
      this.claims = claims;
      sessionStorage.setItem(TOKEN_KEY, token);
    },
    clear() {
      this.token = null;
      this.claims = null;
      sessionStorage.removeItem(TOKEN_KEY);
    },
  };

  /** Take a token from /ui#token=..., then remove the fragment from the address bar and history. */
  function adoptFragmentToken() {
    const hash = window.location.hash;
    if (!hash.startsWith("#token=")) return;
    const params = new URLSearchParams(hash.slice(1));
    const token = (params.get("token") || "").trim();
    const next = params.get("proxy");
    history.replaceState(null, "", window.location.pathname + window.location.search +
      (next ? "#/proxy/" + encodeURIComponent(next) : ""));
    try {
      session.set(token);
    } catch (error) {
      notice(error.message);
    }
  }

  // --- the API -------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(method, path, body) {
    const headers = { Authorization: "Bearer " + session.token, Accept: "application/json" };
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    let payload = null;
    try {
      payload = await response.json();
    } catch (_error) {
      payload = null;
    }
    if (!response.ok) {
      const error = (payload && payload.error) || {};
      if (response.status === 401) signOut(error.message || "Your session ended: sign in again.");
      throw new ApiError(response.status, error.code || "", error.message || response.statusText);
    }
    return payload ? payload.data : null;
  }

  function describe(error) {
    return error instanceof ApiError && error.code
      ? error.message + " (" + error.code + ")"
      : error.message || String(error);
  }

  // --- routing -------------------------------------------------------------------------------

  let view = null; // the page on screen: { stop() }

  function route() {
    if (view) view.stop();
    view = null;
    if (!session.token) {
      $("who").hidden = true;
      show("signin");
      $("token-input").focus();
      return;
    }
    $("who").hidden = false;
    $("who-name").textContent = String(session.claims.sub || "?");
    const role = $("who-role");
    role.textContent = session.isAdmin ? "admin" : "user";
    role.className = "badge " + (session.isAdmin ? "admin" : "");
    const match = /^#\/proxy\/(.+)$/.exec(window.location.hash);
    view = match ? proxyView(decodeURIComponent(match[1])) : overviewView();
  }

  function signOut(message) {
    session.clear();
    notice(message || "", "info");
    route();
  }

  // --- overview ------------------------------------------------------------------------------

  function overviewView() {
    show("overview");
    document.title = "proxy-failover";
    let timer = null;
    let stopped = false;
    const names = new Map(); // instance id -> name, filled lazily per proxy

    async function load() {
      try {
        const proxies = await api("GET", "/proxies");
        if (stopped) return;
        render(proxies);
        $("overview-updated").textContent = "updated " + new Date().toLocaleTimeString();
        await fillNames(proxies);
      } catch (error) {
        if (!stopped && session.token) notice("Could not load proxies: " + describe(error));
      } finally {
        if (!stopped) timer = setTimeout(load, OVERVIEW_POLL_MS);
      }
    }

    function render(proxies) {
      const body = $("proxies").tBodies[0];
      $("overview-empty").hidden = proxies.length > 0;
      const rows = proxies.map((item) => {
        const r = item.redundancy;
        const active = r.activeInstanceId;
        return el(
          "tr",
          { "data-proxy": item.proxyId },
          el("td", { "data-label": "Proxy" },
            el("a", { href: "#/proxy/" + encodeURIComponent(item.proxyId), text: item.proxyId })),
          el("td", { "data-label": "Redundancy", text: r.redundancyLevel }),
          el("td", { "data-label": "Healthy", class: "healthy-count",
            text: r.healthyInstances + "/" + r.totalInstances }),
          el("td", { "data-label": "State" },
            r.isDegraded ? badge("degraded", "bad") : badge("ok", "good")),
          el("td", { "data-label": "Active", class: "active-name",
            "data-instance": active || "",
            text: active ? names.get(active) || active.slice(0, 8) : "none" }),
          el("td", { "data-label": "Epoch", text: r.epoch }),
        );
      });
      body.replaceChildren(...rows);
    }

    async function fillNames(proxies) {
      const missing = proxies.filter(
        (p) => p.redundancy.activeInstanceId && !names.has(p.redundancy.activeInstanceId),
      );
      for (const item of missing.slice(0, 50)) { // one list call per proxy, at most 50 per poll
        if (stopped) return;
        try {
          const instances = await api("GET", "/proxy/" + encodeURIComponent(item.proxyId) + "/instances");
          for (const i of instances) names.set(i.id, i.instanceName);
        } catch (_error) {
          continue; // the id stays shown; the next poll tries again
        }
        for (const cell of document.querySelectorAll("#proxies td.active-name")) {
          const id = cell.getAttribute("data-instance");
          if (id && names.has(id)) cell.textContent = names.get(id);
        }
      }
    }

    load();
    return {
      stop() {
        stopped = true;
        clearTimeout(timer);
      },
    };
  }

  // --- proxy page ----------------------------------------------------------------------------

  function proxyView(proxyId) {
    show("proxy");
    document.title = proxyId + " · proxy-failover";
    $("proxy-title").textContent = proxyId;
    $("facts").replaceChildren();
    $("last-reason").textContent = "";
    $("instances").tBodies[0].replaceChildren();
    $("explain").replaceChildren();
    $("timeline").replaceChildren();
    $("feed").replaceChildren(el("li", { class: "muted", text: "Nothing since this page opened." }));
    const base = "/proxy/" + encodeURIComponent(proxyId);
    const abort = new AbortController();
    let stopped = false;
    let pollTimer = null;
    let refreshTimer = null;
    let busy = false; // an admin action is running: its own refresh follows
    let state = { instances: [], redundancy: null };

    async function refresh() {
      clearTimeout(pollTimer);
      try {
        const [redundancy, instances, events, explanation] = await Promise.all([
          api("GET", base + "/redundancy"),
          api("GET", base + "/instances"),
          api("GET", base + "/failover/events?limit=25"),
          api("GET", base + "/explain"),
        ]);
        if (stopped) return;
        state = { redundancy, instances };
        renderFacts(redundancy, instances);
        renderInstances(instances, redundancy, explanation.unhealthyThreshold);
        renderExplain(explanation);
        renderTimeline(events, instances);
      } catch (error) {
        if (!stopped && session.token) notice("Could not load " + proxyId + ": " + describe(error));
      } finally {
        if (!stopped) pollTimer = setTimeout(refresh, PROXY_POLL_MS);
      }
    }

    function refreshSoon() {
      clearTimeout(refreshTimer);
      refreshTimer = setTimeout(refresh, 100); // one reload for a burst of notifications
    }

    const nameOf = (instances, id) => {
      if (!id) return "none";
      const found = instances.find((i) => i.id === id);
      return found ? found.instanceName : id.slice(0, 8);
    };

    function renderFacts(r, instances) {
      const fact = (term, ...value) =>
        el("div", { class: "fact" }, el("dt", { text: term }), el("dd", {}, ...value));
      $("facts").replaceChildren(
        fact("State", r.isDegraded ? badge("degraded", "bad") : badge("ok", "good")),
        fact("Active", el("strong", { id: "active-name", text: nameOf(instances, r.activeInstanceId) })),
        fact("Epoch", el("span", { id: "epoch", text: r.epoch })),
        fact("Redundancy", r.redundancyLevel),
        fact("Healthy", r.healthyInstances + "/" + r.totalInstances),
        fact("Last failover", r.lastFailoverAt ? time(r.lastFailoverAt) : "never"),
      );
      $("last-reason").textContent = r.lastFailoverReason ? "Last failover: " + r.lastFailoverReason : "";
    }

    function renderInstances(instances, r, fall) {
      const admin = session.isAdmin;
      const head = ["Instance", "Health", "Priority", "Weight", "Admin state", "Failures"];
      if (admin) head.push("Last probe", "Latency", "Actions");
      $("instances-head").replaceChildren(...head.map((h) => el("th", { text: h })));
      const rows = instances.map((i) => {
        const cells = [
          el("td", { "data-label": "Instance" }, el("div", {},
            el("span", { class: "name", text: i.instanceName }),
            i.isActive ? badge("active", "active") : null,
            i.endpoint ? el("div", { class: "muted small", text: i.endpoint }) : null,
            i.trafficAddress // where data planes send user traffic, when not the endpoint's
              ? el("div", { class: "muted small", text: "traffic " + i.trafficAddress }) : null)),
          el("td", { "data-label": "Health" },
            badge(i.healthStatus, { healthy: "good", unhealthy: "bad" }[i.healthStatus] || "")),
          el("td", { "data-label": "Priority", text: i.priority }),
          el("td", { "data-label": "Weight", text: i.weight }),
          el("td", { "data-label": "Admin state", class: "admin-state", text: i.adminState }),
          el("td", { "data-label": "Failures" }, el("div", {}, String(i.consecutiveFailures),
            // still healthy but failing: the fall threshold is near (HAProxy's "going down")
            i.healthStatus === "healthy" && i.consecutiveFailures > 0
              ? badge("failing " + i.consecutiveFailures + "/" + fall, "warn") : null)),
        ];
        if (admin) {
          cells.push(
            el("td", { "data-label": "Last probe" }, el("div", {}, time(i.lastHealthCheck),
              i.lastError ? el("div", { class: "error small", text: i.lastError }) : null)),
            el("td", { "data-label": "Latency",
              text: i.lastLatencyMs === null || i.lastLatencyMs === undefined
                ? "–" : i.lastLatencyMs.toFixed(1) + " ms" }),
            el("td", { "data-label": "Actions", class: "actions" }, ...actionsFor(i, r)),
          );
        }
        return el("tr", { "data-instance": i.instanceName, class: i.isActive ? "is-active" : "" }, ...cells);
      });
      $("instances").tBodies[0].replaceChildren(...rows);
    }

    function actionsFor(instance, r) {
      const buttons = [];
      const eligible = instance.healthStatus === "healthy" && instance.adminState === "enabled";
      if (!instance.isActive && eligible) {
        buttons.push(el("button", {
          type: "button", class: "primary admin-action", "data-action": "switchover",
          text: "Switch over", onclick: () => switchover(instance, r),
        }));
      }
      const states = [["drain", "Drain"], ["maintenance", "Maintain"], ["enabled", "Enable"]];
      for (const [target, label] of states) {
        if (instance.adminState === target) continue;
        buttons.push(el("button", {
          type: "button", class: "admin-action", "data-action": target, text: label,
          onclick: () => setAdminState(instance, target, label),
        }));
      }
      return buttons;
    }

    async function act(question, action) {
      if (busy || !(await confirmDialog(question))) return;
      busy = true;
      notice("");
      try {
        await action();
      } catch (error) {
        notice(describe(error));
      } finally {
        busy = false;
        await refresh();
      }
    }

    function switchover(target, r) {
      const source = r.activeInstanceId;
      const from = source ? " from " + nameOf(state.instances, source) : "";
      return act("Switch " + proxyId + from + " to " + target.instanceName + "?", async () => {
        const event = await api("POST", "/proxy/failover/execute", {
          proxyId, sourceInstanceId: source, targetInstanceId: target.id,
          reason: "Switchover from the dashboard by " + String(session.claims.sub),
        });
        // The pointer moved in execute's transaction; close the event so the next operation
        // is not refused with 009 (the data-plane agents follow the epoch, not the event).
        await api("PUT", "/proxy/failover/events/" + encodeURIComponent(event.id) + "/complete",
          { status: "completed" });
        notice("Switched over to " + target.instanceName + " (epoch " + event.epoch + ").", "info");
      });
    }

    function setAdminState(instance, adminState, label) {
      const consequence = {
        drain: " It stays probed but takes no new role; the active role moves away.",
        maintenance: " Probing stops and the active role moves away.",
        enabled: " It returns to the eligible pool.",
      }[adminState];
      return act(label + " " + instance.instanceName + "?" + consequence, async () => {
        await api("PATCH", "/proxy/instances/" + encodeURIComponent(instance.id), { adminState });
      });
    }

    function renderExplain(x) {
      const items = x.instances.map((i) =>
        el("li", {},
          el("strong", { text: i.instanceName }),
          i.isEligible ? badge("eligible", "good") : badge("not eligible", ""),
          el("ul", {}, ...i.reasons.map((reason) => el("li", { text: reason })))));
      $("explain").replaceChildren(
        el("p", { class: "summary", text: x.summary }),
        el("p", { class: "muted", text: "Evaluation: " + x.evaluation.reason +
          " (" + x.evaluation.reasonCode + "; strategy " + x.strategy +
          "; fall " + x.unhealthyThreshold + ", rise " + x.healthyThreshold + ")" }),
        el("ul", { class: "reasons" }, ...items),
      );
    }

    function renderTimeline(events, instances) {
      if (!events.length) {
        $("timeline").replaceChildren(el("li", { class: "muted", text: "No failover events yet." }));
        return;
      }
      $("timeline").replaceChildren(...events.map((e) => {
        const kind = { completed: "good", failed: "bad", in_progress: "warn" }[e.status] || "";
        const path = e.sourceInstanceId
          ? nameOf(instances, e.sourceInstanceId) + " → " + nameOf(instances, e.targetInstanceId)
          : "→ " + nameOf(instances, e.targetInstanceId);
        return el("li", { "data-type": e.eventType, "data-status": e.status },
          el("div", { class: "when" }, time(e.createdAt)),
          el("div", {},
            badge(e.eventType, "type"), " ", el("span", { class: "path", text: path }), " ",
            badge(e.status.replace("_", " "), kind)),
          el("div", { class: "muted small", text: e.reason + " · by " + e.triggeredBy +
            " · epoch " + e.epoch + (e.durationMs !== null ? " · " + e.durationMs + " ms" : "") +
            (e.errorMessage ? " · " + e.errorMessage : "") }));
      }));
    }

    function addToFeed(type, data) {
      const feed = $("feed");
      if (feed.firstElementChild && feed.firstElementChild.classList.contains("muted")) {
        feed.replaceChildren();
      }
      let body = {};
      try {
        body = JSON.parse(data);
      } catch (_error) {
        body = {};
      }
      const detail = body.data || {};
      const who = detail.instanceName || nameOf(state.instances,
        detail.instanceId || detail.targetInstanceId || detail.activeInstanceId);
      feed.prepend(el("li", { "data-type": type },
        el("span", { class: "when" }, time(body.occurredAt || new Date().toISOString())), " ",
        badge(type, /unhealthy|degraded|failed/.test(type) ? "bad" : "type"), " ",
        el("span", { text: (who && who !== "none" ? who : "") +
          (body.epoch !== undefined ? " · epoch " + body.epoch : "") })));
      while (feed.children.length > FEED_MAX) feed.lastElementChild.remove();
    }

    function setLive(stateName, text) {
      const live = $("live");
      live.setAttribute("data-state", stateName);
      live.textContent = text;
    }

    // The event stream, read with fetch so the token goes in a header (EventSource cannot).
    async function stream() {
      let lastId = null;
      let retryMs = 2000;
      while (!stopped) {
        try {
          const headers = { Authorization: "Bearer " + session.token, Accept: "text/event-stream" };
          if (lastId !== null) headers["Last-Event-ID"] = lastId;
          const response = await fetch(base + "/stream", { headers, cache: "no-store", signal: abort.signal });
          if (response.status === 401) {
            signOut("Your session ended: sign in again.");
            return;
          }
          if (response.status === 404) { // no such proxy, or not this token's: retrying won't help
            setLive("down", "not found");
            return;
          }
          if (!response.ok || !response.body) throw new Error("stream answered " + response.status);
          setLive("live", "live");
          refreshSoon(); // catch up on what happened while (re)connecting
          const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
          let buffer = "";
          let event = { id: null, type: "message", data: [] };
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buffer += value;
            let newline;
            while ((newline = buffer.indexOf("\n")) >= 0) {
              const line = buffer.slice(0, newline).replace(/\r$/, "");
              buffer = buffer.slice(newline + 1);
              if (line === "") { // a blank line dispatches the event
                if (event.id !== null) lastId = event.id;
                if (event.data.length) {
                  addToFeed(event.type, event.data.join("\n"));
                  refreshSoon();
                }
                event = { id: null, type: "message", data: [] };
                continue;
              }
              if (line.startsWith(":")) continue; // comment / keep-alive
              const colon = line.indexOf(":");
              const field = colon < 0 ? line : line.slice(0, colon);
              const raw = colon < 0 ? "" : line.slice(colon + 1);
              const text = raw.startsWith(" ") ? raw.slice(1) : raw;
              if (field === "id") event.id = text;
              else if (field === "event") event.type = text;
              else if (field === "data") event.data.push(text);
              else if (field === "retry" && /^\d+$/.test(text)) retryMs = Number(text);
            }
          }
        } catch (_error) {
          // a dropped connection or a restarting server: retry below, resuming at lastId
        }
        if (stopped) return;
        setLive("down", "reconnecting…");
        await new Promise((resolve) => setTimeout(resolve, retryMs));
      }
    }

    setLive("connecting", "connecting…");
    refresh();
    stream();
    return {
      stop() {
        stopped = true;
        abort.abort();
        clearTimeout(pollTimer);
        clearTimeout(refreshTimer);
      },
    };
  }

  // --- confirmation dialog -------------------------------------------------------------------

  function confirmDialog(question) {
    const dialog = $("confirm");
    $("confirm-text").textContent = question;
    return new Promise((resolve) => {
      const done = (answer) => {
        dialog.removeEventListener("close", onClose);
        $("confirm-ok").removeEventListener("click", onOk);
        $("confirm-cancel").removeEventListener("click", onCancel);
        if (dialog.open) dialog.close();
        resolve(answer);
      };
      const onOk = () => done(true);
      const onCancel = () => done(false);
      const onClose = () => done(false); // Escape
      $("confirm-ok").addEventListener("click", onOk);
      $("confirm-cancel").addEventListener("click", onCancel);
      dialog.addEventListener("close", onClose);
      dialog.showModal();
      $("confirm-cancel").focus();
    });
  }

  // --- start ---------------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    adoptFragmentToken();
    const stored = sessionStorage.getItem(TOKEN_KEY);
    if (stored && !session.token) {
      try {
        session.set(stored);
      } catch (error) {
        session.clear();
        notice(error.message);
      }
    }
    $("signin-form").addEventListener("submit", (event) => {
      event.preventDefault();
      try {
        session.set($("token-input").value.trim());
        $("token-input").value = "";
        notice("");
        route();
      } catch (error) {
        notice(error.message);
      }
    });
    $("sign-out").addEventListener("click", () => signOut(""));
    window.addEventListener("hashchange", () => {
      if (window.location.hash.startsWith("#token=")) adoptFragmentToken();
      route();
    });
    route();
  });
})();
