// Shoal status page: one blocking query on /v1/shoal/ui/state keeps the
// page current; nothing here writes to the agent. Every value from the
// catalog reaches the page through textContent, never as HTML: service
// names, tags and check output are written by whoever registers services.
"use strict";

(function () {
  const STATE_URL = "/v1/shoal/ui/state";
  const WAIT = "30s";

  // With --http-token-reads the page is opened as /ui/?token=TOKEN; the
  // token then goes with every read, as the CLI sends it.
  const token = new URLSearchParams(location.search).get("token") || "";
  const headers = token ? { "X-Consul-Token": token } : {};

  let index = 0;
  let state = null;
  let failures = 0;
  const expanded = new Set(); // instances whose check output is shown

  const $ = (id) => document.getElementById(id);

  // el builds an element: el("td", {class: "x"}, "text", child, ...).
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) {
      if (c === undefined || c === null || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  const pill = (status, label) =>
    el("span", { class: "pill s-" + status, text: label || status });

  function sleep(ms) {
    return new Promise((r) => setTimeout(r, ms));
  }

  function setLive(kind, text) {
    $("live").dataset.state = kind;
    $("live-text").textContent = text;
  }

  function banner(kind, ...parts) {
    const b = $("banner");
    if (!kind) {
      b.hidden = true;
      b.replaceChildren();
      return;
    }
    b.hidden = false;
    b.className = "banner b-" + kind;
    b.replaceChildren(...parts);
  }

  // poll runs the blocking query forever: it answers at once the first
  // time, then whenever the catalog index passes the one last seen.
  async function poll() {
    for (;;) {
      const url = STATE_URL + (index ? "?index=" + index + "&wait=" + WAIT : "");
      let resp;
      try {
        resp = await fetch(url, { headers, cache: "no-store" });
      } catch (e) {
        await failed("offline", "reconnecting", "Cannot reach the agent: " + e.message + ". Retrying\u2026");
        continue;
      }
      if (resp.status === 403) {
        const reason = (await resp.text()).trim();
        setLive("denied", "access denied");
        banner(
          "denied",
          el("strong", { text: "This agent requires an API token to read. " }),
          "It runs with --http-token-reads: open this page as ",
          el("code", { text: location.pathname + "?token=YOUR_TOKEN" }),
          ". The agent said: ",
          el("q", { text: reason })
        );
        index = 0;
        await sleep(10000);
        continue;
      }
      if (!resp.ok) {
        const reason = (await resp.text()).trim();
        await failed("offline", "error", "The agent answered " + resp.status + ": " + reason);
        continue;
      }
      let body;
      try {
        body = await resp.json();
      } catch (e) {
        await failed("offline", "reconnecting", "Unreadable answer from the agent. Retrying\u2026");
        continue;
      }
      failures = 0;
      const next = Number(resp.headers.get("X-Consul-Index")) || 0;
      // An index that went back means a new agent answers: start over.
      index = next > 0 && next >= index ? next : 0;
      state = body;
      banner(null);
      setLive("live", "live");
      render();
    }
  }

  async function failed(kind, label, message) {
    failures++;
    index = 0;
    setLive(kind, label);
    banner("error", message);
    await sleep(Math.min(500 * 2 ** Math.min(failures, 5), 15000));
  }

  function render() {
    const s = state;
    document.title = "Shoal \u00b7 " + s.Node;
    $("agent").replaceChildren(
      el("span", { class: "muted", text: "agent " }),
      el("strong", { text: s.Node }),
      el("span", { class: "muted", text: " \u00b7 " + s.Datacenter + " \u00b7 v" + s.Version })
    );

    const alive = s.Members.filter((m) => m.Status === "alive").length;
    const instances = s.Services.flatMap((x) => x.Instances);
    const passing = instances.filter((i) => i.Status === "passing").length;
    $("sum-members").textContent = alive + " / " + s.Members.length;
    $("sum-services").textContent = String(s.Services.length);
    $("sum-instances").textContent = passing + " / " + instances.length;
    $("sum-members").className = "num" + (alive < s.Members.length ? " warn" : "");
    $("sum-instances").className = "num" + (passing < instances.length ? " warn" : "");

    renderMembers(s);
    renderServices(s);
    renderConfig(s.Config);
    $("updated").textContent = "Updated " + new Date().toLocaleTimeString();
  }

  function renderMembers(s) {
    const rows = s.Members.map((m) =>
      el(
        "tr",
        { "data-node": m.Name, "data-status": m.Status },
        el("td", {}, el("strong", { text: m.Name }), m.Name === s.Node ? el("span", { class: "tag self", text: "this agent" }) : null),
        el("td", {}, pill(m.Status)),
        el("td", { class: "mono", text: m.Address }),
        el("td", { class: "mono" }, m.HTTPAddr ? uiLink(m.HTTPAddr) : "\u2013"),
        el("td", { text: m.Datacenter }),
        el("td", { class: "n", text: String(m.Instances) })
      )
    );
    $("members").tBodies[0].replaceChildren(...rows);
  }

  // uiLink links another member's status page; only plain http addresses of
  // the form host:port are linked.
  function uiLink(addr) {
    if (!/^[0-9A-Za-z.:\[\]-]+$/.test(addr)) return addr;
    return el("a", { href: "http://" + addr + "/ui/", text: addr, rel: "noreferrer" });
  }

  function matches(svc, q) {
    if (!q) return true;
    const hay = [svc.Name, ...svc.Tags, ...svc.Instances.flatMap((i) => [i.ID, i.Node, i.Address])];
    return hay.some((h) => h && h.toLowerCase().includes(q));
  }

  function renderServices(s) {
    const q = $("filter").value.trim().toLowerCase();
    const cards = s.Services.filter((svc) => matches(svc, q)).map(serviceCard);
    $("services").replaceChildren(...cards);
    $("no-services").hidden = s.Services.length > 0;
  }

  function serviceCard(svc) {
    const counts = [];
    if (svc.Passing) counts.push(pill("passing", svc.Passing + " passing"));
    if (svc.Warning) counts.push(pill("warning", svc.Warning + " warning"));
    if (svc.Critical) counts.push(pill("critical", svc.Critical + " critical"));

    const body = el("tbody");
    for (const inst of svc.Instances) {
      const key = inst.Node + "/" + inst.ID;
      const open = expanded.has(key);
      const toggle = () => {
        if (expanded.has(key)) expanded.delete(key);
        else expanded.add(key);
        render();
      };
      const checks = inst.Checks.map((c) =>
        el(
          "button",
          { class: "check s-" + c.Status, title: c.Status + ": " + (c.Output || "(no output)"), onclick: toggle, type: "button" },
          el("span", { class: "dot" }),
          checkLabel(c)
        )
      );
      const addr = inst.Port ? hostPort(inst.Address, inst.Port) : inst.Address;
      body.append(
        el(
          "tr",
          { class: "instance" + (open ? " open" : ""), "data-instance": inst.ID, "data-status": inst.Status },
          el("td", {}, el("strong", { text: inst.ID }), ...inst.Tags.map((t) => el("span", { class: "tag", text: t }))),
          el("td", { text: inst.Node }),
          el("td", { class: "mono", text: addr }),
          el("td", {}, pill(inst.Status)),
          el("td", { class: "checks" }, ...checks)
        )
      );
      if (open) body.append(el("tr", { class: "detail" }, el("td", { colspan: 5 }, checkDetails(inst))));
    }
    return el(
      "article",
      { class: "service", "data-service": svc.Name },
      el(
        "div",
        { class: "service-head" },
        el("h3", { text: svc.Name }),
        ...svc.Tags.map((t) => el("span", { class: "tag", text: t })),
        el("div", { class: "counts" }, ...counts)
      ),
      el(
        "table",
        { class: "grid" },
        el("thead", {}, el("tr", {}, ...["Instance", "Node", "Address", "Health", "Checks"].map((h) => el("th", { text: h })))),
        body
      )
    );
  }

  // renderConfig shows the intentions in the order they are matched and
  // the config entries by kind and name, and says whether this agent
  // enforces the intentions at all.
  function renderConfig(c) {
    const def = el("strong", { text: c.DefaultIntention });
    $("enforcement").replaceChildren(
      ...(c.Enforced
        ? ["Intentions are enforced by this agent on the mesh connections it receives; with no matching intention the default is ", def, "."]
        : [
            el("strong", { text: "Not enforced on this agent: " }),
            "it runs without the node PKI (--ca-file), so it cannot verify callers. Intentions are stored and answered; the default is ",
            def,
            ".",
          ])
    );
    $("enforcement").className = "note" + (c.Enforced ? "" : " warn");

    const intentions = c.Intentions.map((i) =>
      el(
        "tr",
        { "data-source": i.Source, "data-destination": i.Destination, "data-action": i.Action },
        el("td", { class: "mono", text: i.Source }),
        el("td", { class: "mono" }, el("span", { class: "muted", text: "\u2192 " }), i.Destination),
        el("td", {}, pill(i.Action)),
        el("td", { class: "n", text: String(i.Precedence) }),
        el("td", { text: i.Description || "" }),
        el("td", { class: "n mono", text: String(i.ModifyIndex) })
      )
    );
    $("intentions").tBodies[0].replaceChildren(...intentions);
    $("intentions").hidden = intentions.length === 0;
    $("no-intentions").hidden = intentions.length > 0;

    const entries = c.Entries.map((e) =>
      el(
        "tr",
        { "data-kind": e.Kind, "data-name": e.Name },
        el("td", { class: "mono", text: e.Kind }),
        el("td", {}, el("strong", { text: e.Name })),
        el("td", { text: e.Summary || "" }),
        el("td", { text: e.Writer }),
        el("td", { class: "n mono", text: String(e.ModifyIndex) }),
        el("td", { class: "mono", text: stampTime(e.ModifyIndex) })
      )
    );
    $("entries").tBodies[0].replaceChildren(...entries);
    $("entries").hidden = entries.length === 0;
    $("no-entries").hidden = entries.length > 0;

    // Each service's compiled chain: its routes in the order they are
    // tried, then the default, or why it does not compile.
    const chains = (c.Chains || []).map((ch) =>
      el(
        "div",
        { class: "chain", "data-service": ch.Service },
        el("strong", { text: ch.Service }),
        ch.Error
          ? el("p", { class: "note warn", text: "Does not compile, requests go straight to the service: " + ch.Error })
          : el("pre", { class: "mono", text: (ch.Lines || []).join("\n") })
      )
    );
    $("chains").replaceChildren(...chains);
    $("no-chains").hidden = chains.length > 0;
  }

  // stampTime reads the wall-clock time out of a write's stamp (a hybrid
  // logical clock in microseconds since the epoch).
  function stampTime(stamp) {
    const d = new Date(Math.floor(stamp / 1000));
    return isNaN(d.getTime()) ? "" : d.toLocaleString();
  }

  function checkLabel(c) {
    if (c.CheckID === "serfHealth") return "node";
    return c.Name || c.CheckID;
  }

  function checkDetails(inst) {
    return el(
      "dl",
      { class: "outputs" },
      ...inst.Checks.flatMap((c) => [
        el("dt", {}, pill(c.Status), " ", el("strong", { text: c.Name || c.CheckID }), c.Type ? el("span", { class: "muted", text: " (" + c.Type + ")" }) : null),
        el("dd", {}, el("pre", { text: c.Output || c.Notes || "(no output)" })),
      ])
    );
  }

  function hostPort(host, port) {
    return (host.includes(":") ? "[" + host + "]" : host) + ":" + port;
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("filter").addEventListener("input", () => state && render());
    poll();
  });
})();
