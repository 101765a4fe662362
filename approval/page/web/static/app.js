// Countersign approver page. No inline script: CSP allows only this file.
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]').content;

async function post(url, body) {
  const res = await fetch(url, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
    body: JSON.stringify(body),
  });
  const data = await res.json().catch(() => ({ error: "bad response (" + res.status + ")" }));
  if (!res.ok) {
    const err = new Error(data.error || "request failed");
    err.check = data.check;
    throw err;
  }
  return data;
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function setOutcome(text, kind) {
  const o = document.getElementById("outcome");
  if (!o) return;
  o.textContent = text;
  o.className = "outcome " + (kind || "");
}

function events(onChange) {
  if (!window.EventSource) return;
  const es = new EventSource("/api/events");
  es.addEventListener("change", onChange);
}

// Request page.
function requestPage(section) {
  const id = section.dataset.id;
  const expires = new Date(section.dataset.expires);
  const approve = document.getElementById("approve");
  const deny = document.getElementById("deny");
  let busy = false;
  const grantOffer = document.getElementById("grant-offer");
  const grantButton = document.getElementById("approve-grant");

  function render(r) {
    section.dataset.state = r.state;
    const st = document.getElementById("state");
    st.textContent = r.state;
    st.className = "state state-" + r.state;
    document.getElementById("count").textContent = String(r.approvals.length);
    const pending = r.state === "pending";
    approve.disabled = deny.disabled = busy || !pending;
    document.getElementById("actions").hidden = !pending;
    if (grantOffer) {
      grantOffer.hidden = !pending;
      grantButton.disabled = busy || !pending;
    }
    if (!pending && !busy) {
      let t = "This request is " + r.state;
      if (r.decidedBy) t += " (" + r.decidedBy + ")";
      if (r.reason) t += ": " + r.reason;
      setOutcome(t + ".", r.state === "approved" || r.state === "executed" ? "ok" : "bad");
    }
  }

  async function refresh() {
    const res = await fetch("/api/requests/" + encodeURIComponent(id), { credentials: "same-origin" });
    if (res.ok) render(await res.json());
  }

  function tick() {
    const left = Math.max(0, Math.floor((expires - Date.now()) / 1000));
    const m = Math.floor(left / 60), s = left % 60;
    document.getElementById("timeleft").textContent =
      section.dataset.state === "pending" ? (left === 0 ? "expired" : m + "m " + String(s).padStart(2, "0") + "s") : "—";
  }

  // grant: {seconds, calls} to approve and create a standing grant.
  async function decide(decision, grant) {
    busy = true;
    approve.disabled = deny.disabled = true;
    if (grantButton) grantButton.disabled = true;
    setOutcome(decision === "approve" ? "Touch your security key to approve…" : "Touch your security key to deny…", "");
    try {
      const body = { decision };
      if (grant) body.grant = grant;
      const begin = await post("/api/requests/" + encodeURIComponent(id) + "/begin", body);
      const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(begin.publicKey);
      const cred = await navigator.credentials.get({ publicKey });
      const r = await post("/api/requests/" + encodeURIComponent(id) + "/finish", {
        ceremony: begin.ceremony,
        credential: cred.toJSON(),
      });
      busy = false;
      render(r);
      if (r.state === "pending") {
        setOutcome("Your approval is counted: " + r.approvals.length + " of " + r.quorum + ". Waiting for the others.", "ok");
      }
    } catch (e) {
      busy = false;
      setOutcome("Not recorded: " + e.message, "bad");
      refresh();
    }
  }

  approve.addEventListener("click", () => decide("approve"));
  if (grantButton) {
    grantButton.addEventListener("click", () => {
      const minutes = Number(document.getElementById("grant-minutes").value);
      const calls = Number(document.getElementById("grant-calls").value);
      decide("approve", { seconds: Math.round(minutes * 60), calls });
    });
  }
  deny.addEventListener("click", () => decide("deny"));
  events(refresh);
  tick();
  setInterval(tick, 1000);
  refresh();
}

// Browser notifications: while the pending list is open in a background
// tab, a request that appears on it shows a system notification, so it does
// not wait for someone to look. Browsers only ask for the permission on a
// user gesture, hence the button. Returns the function that is given every
// pending list the page fetches.
function browserNotifications(list) {
  if (!("Notification" in window)) return () => {};
  // What the server rendered is already seen: notify only of what is new.
  const seen = new Set();
  for (const a of list.querySelectorAll("a[href^='/requests/']")) seen.add(a.getAttribute("href").split("/").pop());
  const button = el("button", "notify-toggle", "Notify me of new requests in this browser");
  button.type = "button";
  const show = () => { button.hidden = Notification.permission !== "default"; };
  button.addEventListener("click", async () => {
    await Notification.requestPermission();
    show();
  });
  list.before(button);
  show();
  return (pending) => {
    for (const r of pending) {
      if (seen.has(r.id)) continue;
      seen.add(r.id);
      if (!document.hidden || Notification.permission !== "granted") continue;
      // The server's binding message (summary and code), never the display.
      const n = new Notification("Approval needed", { body: r.bindingMessage, tag: r.id, requireInteraction: true });
      n.addEventListener("click", () => {
        window.focus();
        location.href = r.url;
        n.close();
      });
    }
  };
}

// Batch selection on the pending list: a checkbox on each request the
// policy lets be approved together; "Review N selected" submits the form
// (GET /batch?id=…), which shows each of them in full before the one tap.
function batchSelection(list) {
  const form = document.getElementById("batch-form");
  const bar = document.getElementById("batch-bar");
  const button = document.getElementById("review-batch");
  if (!form || !bar || !button) return { checked: () => new Set(), update: () => {} };
  const max = Number(form.dataset.max) || 1;
  const boxes = () => [...list.querySelectorAll("input[name=id]")];
  function update() {
    const picked = boxes().filter((b) => b.checked);
    bar.hidden = boxes().length === 0;
    button.disabled = picked.length === 0 || picked.length > max;
    button.textContent = picked.length === 0 ? "Review selected" :
      picked.length > max ? "Select at most " + max : "Review " + picked.length + " selected";
  }
  list.addEventListener("change", update);
  update();
  return { checked: () => new Set(boxes().filter((b) => b.checked).map((b) => b.value)), update };
}

// Pending list and history.
function indexPage(list) {
  const history = document.querySelector("#history tbody");
  const notifyNew = browserNotifications(list);
  const selection = batchSelection(list);
  async function refresh() {
    const res = await fetch("/api/requests", { credentials: "same-origin" });
    if (!res.ok) return;
    const data = await res.json();
    notifyNew(data.pending);
    const picked = selection.checked();
    list.replaceChildren();
    if (data.pending.length === 0) list.append(el("li", "empty", "Nothing is waiting."));
    for (const r of data.pending) {
      const li = el("li", "card level-" + r.level + (r.batchable ? " pickable" : ""));
      if (r.batchable) {
        const label = el("label", "pick");
        const box = el("input");
        box.type = "checkbox";
        box.name = "id";
        box.value = r.id;
        box.checked = picked.has(r.id);
        box.setAttribute("aria-label", "Select for one-tap approval");
        label.append(box);
        li.append(label);
      }
      const a = el("a");
      a.href = r.url;
      a.append(el("span", "badge level-" + r.level, r.level), " ", el("span", "msg", r.bindingMessage),
        el("span", "sub", r.tool + " · agent " + r.agent + " · " + r.approvals.length + "/" + r.quorum + " approvals"));
      li.append(a);
      list.append(li);
    }
    const more = document.getElementById("pending-more");
    more.hidden = data.pendingTotal <= data.pending.length;
    more.textContent = "Showing the " + data.pending.length + " that expire soonest of " + data.pendingTotal +
      " waiting; the rest appear as these are decided.";
    history.replaceChildren();
    for (const r of data.history) {
      const tr = el("tr");
      const td = el("td");
      const a = el("a", "", r.bindingMessage);
      a.href = r.url;
      td.append(a);
      tr.append(td, el("td", "state state-" + r.state, r.state), el("td", "", r.decidedBy || ""),
        el("td", "", r.decidedAt ? new Date(r.decidedAt).toISOString().replace("T", " ").slice(0, 19) + " UTC" : ""));
      history.append(tr);
    }
    selection.update();
  }
  events(refresh);
}

// Standing grants on the main page: listed with their use, revocable with
// one click (the server records who, from the sign-in session).
function grantsList(table) {
  const body = table.querySelector("tbody");
  async function refresh() {
    const res = await fetch("/api/grants", { credentials: "same-origin" });
    if (!res.ok) return;
    const data = await res.json();
    body.replaceChildren();
    if (data.grants.length === 0) {
      const td = el("td", "empty", "No grants.");
      td.colSpan = 4;
      const tr = el("tr");
      tr.append(td);
      body.append(tr);
    }
    for (const g of data.grants) {
      const tr = el("tr");
      tr.dataset.grant = g.id;
      const what = el("td");
      what.append(el("span", "sub", "granted by " + g.approver + " for agent " + g.agent + ", " + g.tool), el("pre", "condition", g.condition));
      const status = el("td", "status");
      if (g.revokedAt) status.append(el("span", "state-denied", "revoked by " + g.revokedBy));
      else if (g.active) {
        const b = el("button", "revoke", "Revoke");
        b.type = "button";
        b.dataset.grant = g.id;
        status.append(el("span", "state-approved", "active"), " ", b);
      } else status.append("ended");
      tr.append(what, el("td", "used", g.used + " of " + g.maxCalls),
        el("td", "", new Date(g.expiresAt).toISOString().replace("T", " ").slice(0, 19) + " UTC"), status);
      body.append(tr);
    }
  }
  table.addEventListener("click", async (ev) => {
    const b = ev.target.closest("button.revoke");
    if (!b) return;
    b.disabled = true;
    try {
      await post("/api/grants/" + encodeURIComponent(b.dataset.grant) + "/revoke", {});
    } catch (e) {
      setOutcome("Not revoked: " + e.message, "bad");
    }
    refresh();
  });
  events(refresh);
}

const grantsTable = document.getElementById("grants");
if (grantsTable) grantsList(grantsTable);

// Freeze an agent: one click and a confirmation, no key (a freeze only
// takes authority away; the server records who, from the sign-in session).
async function freezeAgent(name) {
  if (!window.confirm("Freeze agent " + name + "? Every call of it is refused at once, its waiting requests are " +
    "cancelled and its grants revoked. Only an admin can unfreeze it.")) return;
  try {
    await post("/api/agents/" + encodeURIComponent(name) + "/freeze", {});
    setOutcome("Agent " + name + " is frozen.", "ok");
  } catch (e) {
    setOutcome("Not frozen: " + e.message, "bad");
  }
}

// Agents on the main page, each with its Freeze button or its freeze.
function agentsList(table) {
  const body = table.querySelector("tbody");
  async function refresh() {
    const res = await fetch("/api/agents", { credentials: "same-origin" });
    if (!res.ok) return;
    const data = await res.json();
    body.replaceChildren();
    if (data.agents.length === 0) {
      const td = el("td", "empty", "No agent is waiting, holding a grant or frozen.");
      td.colSpan = 2;
      const tr = el("tr");
      tr.append(td);
      body.append(tr);
    }
    for (const a of data.agents) {
      const tr = el("tr");
      tr.dataset.agent = a.name;
      const status = el("td", "status");
      if (a.frozen) {
        status.append(el("span", "state-denied", "frozen by " + a.frozen.frozenBy + " since " +
          new Date(a.frozen.frozenAt).toISOString().replace("T", " ").slice(0, 19) + " UTC"));
      } else {
        const b = el("button", "revoke freeze", "Freeze");
        b.type = "button";
        b.dataset.agent = a.name;
        status.append("calls run ", b);
      }
      tr.append(el("td", "", a.name), status);
      body.append(tr);
    }
  }
  table.addEventListener("click", async (ev) => {
    const b = ev.target.closest("button.freeze");
    if (!b) return;
    b.disabled = true;
    await freezeAgent(b.dataset.agent);
    refresh();
  });
  events(refresh);
}

const agentsTable = document.getElementById("agents");
if (agentsTable) agentsList(agentsTable);

const freezeButton = document.getElementById("freeze-agent");
if (freezeButton) {
  freezeButton.addEventListener("click", async () => {
    freezeButton.disabled = true;
    await freezeAgent(freezeButton.dataset.agent);
    freezeButton.disabled = false;
  });
}

// Batch confirmation page: every selected request is shown above in full;
// one tap signs the batch challenge the server derives from all of them.
function batchPage(section) {
  const ids = section.dataset.ids.split(",");
  const button = document.getElementById("approve-batch");
  function render(reqs) {
    for (const r of reqs) {
      const item = section.querySelector('.batch-item[data-id="' + r.id + '"]');
      if (!item) continue;
      const st = item.querySelector(".state");
      st.textContent = r.state;
      st.className = "state state-" + r.state;
      item.querySelector(".count").textContent = String(r.approvals.length);
    }
  }
  button.addEventListener("click", async () => {
    button.disabled = true;
    setOutcome("Touch your security key to approve all " + ids.length + "…", "");
    try {
      const begin = await post("/api/batch/begin", { requests: ids });
      const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(begin.publicKey);
      const cred = await navigator.credentials.get({ publicKey });
      const r = await post("/api/batch/finish", { requests: ids, ceremony: begin.ceremony, credential: cred.toJSON() });
      render(r.requests);
      const waiting = r.requests.filter((x) => x.state === "pending").length;
      setOutcome(waiting === 0 ? "Approved all " + r.requests.length + " with one tap." :
        "Your approval is counted on all " + r.requests.length + "; " + waiting + " wait for other approvers.", "ok");
      document.getElementById("actions").hidden = true;
    } catch (e) {
      button.disabled = false;
      setOutcome("Not recorded, none of them: " + e.message, "bad");
    }
  });
}

// Enrollment page.
function enrollPage() {
  const button = document.getElementById("register");
  const token = location.pathname.split("/").pop();
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      for (;;) {
        const begin = await post("/api/enroll/" + encodeURIComponent(token) + "/begin", {});
        let cred;
        if (begin.step === "get") {
          setOutcome("Touch one of your existing keys to vouch for the new one…", "");
          cred = await navigator.credentials.get({ publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(begin.publicKey) });
        } else {
          setOutcome("Touch the new security key…", "");
          cred = await navigator.credentials.create({ publicKey: PublicKeyCredential.parseCreationOptionsFromJSON(begin.publicKey) });
        }
        const r = await post("/api/enroll/" + encodeURIComponent(token) + "/finish", {
          ceremony: begin.ceremony,
          credential: cred.toJSON(),
        });
        if (r.done) {
          setOutcome("Key registered (" + r.credentialId.slice(0, 12) + "…). You can close this page.", "ok");
          return;
        }
      }
    } catch (e) {
      setOutcome("Not registered: " + e.message, "bad");
      button.disabled = false;
    }
  });
}

const req = document.getElementById("request");
if (req) requestPage(req);
const pending = document.getElementById("pending");
if (pending) indexPage(pending);
if (document.getElementById("enroll")) enrollPage();
const batch = document.getElementById("batch");
if (batch) batchPage(batch);

// Sign-in page (a page reachable beyond loopback): an assertion over a
// fresh challenge, naming no credential; the server answers with a session.
function signinPage() {
  const button = document.getElementById("signin-key");
  button.addEventListener("click", async () => {
    button.disabled = true;
    setOutcome("Touch your security key…", "");
    try {
      const begin = await post("/api/signin/begin", {});
      const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(begin.publicKey);
      const cred = await navigator.credentials.get({ publicKey });
      await post("/api/signin/finish", { ceremony: begin.ceremony, credential: cred.toJSON() });
      location.href = "/";
    } catch (e) {
      button.disabled = false;
      setOutcome("Not signed in: " + e.message, "bad");
    }
  });
}

if (document.getElementById("signin")) signinPage();

// A person signed in through the identity provider registers their own
// key: the server makes them a one-time link, which the page opens.
function selfEnroll(button) {
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const r = await post("/api/self-enroll", {});
      location.href = r.url;
    } catch (e) {
      button.disabled = false;
      const out = document.getElementById("enroll-self-outcome");
      out.textContent = "No link: " + e.message;
      out.className = "outcome bad";
    }
  });
}

const enrollSelf = document.getElementById("enroll-self");
if (enrollSelf) selfEnroll(enrollSelf);
