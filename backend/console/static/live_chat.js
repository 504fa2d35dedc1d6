// The live chat panel of a case page (templates/_case_chat.html).
//
// The transcript arrives over a WebSocket (backend/console/live.py): history first, then live
// entries. After a lost connection the page reconnects with growing, jittered delays and asks
// only for what came after the last entry it has, so the chat stays as it was.
// Everything a victim wrote is put in the page with textContent, never as HTML: a line holding
// markup or a script shows as the text it is.
"use strict";

(function () {
  const panel = document.getElementById("live-chat");
  if (!panel) {
    return;
  }
  // Translated through the console's catalog, embedded in every page (templates/base.html).
  const catalog = JSON.parse(document.getElementById("console-messages").textContent || "{}");
  const _ = (text, values) =>
    (catalog[text] || text).replace(/%\((\w+)\)s/g, (whole, name) => String(values[name]));
  const caseId = panel.dataset.case;
  const csrf = panel.dataset.csrf;
  const canReply = panel.dataset.canReply === "yes";
  const stateText = panel.querySelector(".chat-state");
  const list = panel.querySelector(".chat-lines");
  const startButton = panel.querySelector(".chat-start");
  const endButton = panel.querySelector(".chat-end");
  const form = panel.querySelector(".chat-send");
  const canned = panel.querySelector(".chat-canned");
  const input = panel.querySelector(".chat-input");
  const submit = panel.querySelector(".chat-submit");
  const errorText = panel.querySelector(".chat-error");
  const alertText = panel.querySelector(".chat-alert");

  const DELIVERY = {
    sent: _("sent"),
    delivered: _("delivered"),
    held: _("waiting for the victim's app"),
    failed: _("failed to deliver"),
  };
  // Triage flags (flows/triage.yaml): what the victim's words matched; the bot has already
  // given her the safety guidance, and the case's priority has risen.
  const TRIAGE = {
    self_harm: _("Self-harm risk: the victim's words match the self-harm rule. Call 119 with her if she is in danger now."),
    threat: _("Threat in progress: the victim's words match the threat / deadline rule."),
    minor: _("The victim may be a minor."),
  };
  const RETRY_FIRST_MS = 500;
  const RETRY_MAX_MS = 15000;
  const NOT_ALLOWED = 4403;

  let lastId = "0-0";
  let status = panel.dataset.status;
  // "none" (never started), "on", "ended" (by the counselor), "left" (the victim left).
  let chat = "none";
  let caughtUp = false;
  let retries = 0;
  const deliveries = new Map(); // line id -> its delivery label element

  function newer(id, than) {
    const [a, b] = id.split("-").map(Number);
    const [c, d] = than.split("-").map(Number);
    return a > c || (a === c && b > d);
  }

  function clock(at) {
    return new Date(at * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function notice(text) {
    const item = document.createElement("li");
    item.className = "notice";
    item.textContent = text;
    list.append(item);
  }

  function showLine(entry) {
    const item = document.createElement("li");
    item.className = entry.sender === "victim" ? "victim" : "counselor";
    item.dataset.lineId = entry.line_id;
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = entry.sender === "victim" ? _("Victim") : _("Counselor");
    const time = document.createElement("time");
    time.textContent = clock(entry.at);
    const text = document.createElement("div");
    text.className = "text";
    text.textContent = entry.text;
    item.append(who, time, text);
    if (entry.sender === "counselor") {
      const delivery = document.createElement("span");
      delivery.className = "delivery";
      delivery.textContent = DELIVERY.sent;
      item.append(delivery);
      deliveries.set(entry.line_id, delivery);
    }
    list.append(item);
  }

  function applyEvent(entry) {
    if (entry.kind in DELIVERY) {
      const delivery = deliveries.get(entry.ref);
      if (delivery) {
        delivery.textContent = DELIVERY[entry.kind];
        delivery.className = "delivery " + entry.kind;
      }
      return;
    }
    if (entry.kind === "triage") {
      const said = TRIAGE[entry.ref] || _("Safety flag: %(flag)s", { flag: entry.ref });
      notice(said);
      alertText.textContent = said;
      alertText.hidden = false;
      panel.classList.add("flagged");
      return;
    }
    if (entry.kind === "joined") {
      chat = "on";
      status = "active";
      notice(_("The chat started: the victim is told a counselor joined."));
    } else if (entry.kind === "ended" && entry.by === "victim") {
      chat = "left";
      notice(_("The victim left the chat."));
    } else if (entry.kind === "ended") {
      chat = "ended";
      notice(_("The chat was ended."));
    }
  }

  function refresh() {
    const on = caughtUp && chat === "on";
    input.disabled = !on || !canReply;
    submit.disabled = !on || !canReply;
    canned.disabled = !on || !canReply;
    endButton.hidden = !on;
    const held = status === "claimed" || status === "active";
    startButton.hidden = !caughtUp || !held || !(chat === "none" || chat === "ended");
    if (!caughtUp) {
      return;
    }
    const said = {
      none: _("The chat has not started."),
      on: _("The chat is on."),
      ended: _("The chat has ended."),
      left: _("The victim left the chat. They cannot read anything sent now."),
    };
    stateText.textContent = said[chat];
  }

  function showError(text) {
    errorText.textContent = text;
    errorText.hidden = !text;
  }

  function receive(entry) {
    if (entry.type === "caught_up") {
      caughtUp = true;
      retries = 0;
      refresh();
      return;
    }
    if (!entry.id || !newer(entry.id, lastId)) {
      return;
    }
    lastId = entry.id;
    if (entry.type === "line" && (entry.flags || []).includes("self_harm") && window.hotlineAlert) {
      window.hotlineAlert(
        "self-harm:" + entry.id,
        _("Self-harm risk in the live chat of case %(id)s", { id: caseId.slice(0, 8) }),
        null,
      );
    }
    if (entry.type === "line") {
      showLine(entry);
    } else if (entry.type === "event") {
      applyEvent(entry);
    } else if (entry.type === "unreadable") {
      notice(_("A message here cannot be opened with your keys."));
    }
    refresh();
    list.scrollTop = list.scrollHeight;
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const url = `${scheme}//${location.host}/console/cases/${encodeURIComponent(caseId)}/live` +
      `?after=${encodeURIComponent(lastId)}`;
    const socket = new WebSocket(url);
    socket.addEventListener("message", (event) => receive(JSON.parse(event.data)));
    socket.addEventListener("close", (event) => {
      caughtUp = false;
      refresh();
      if (event.code === NOT_ALLOWED) {
        stateText.textContent = _("You are signed out, or the case is no longer yours. Reload the page.");
        return;
      }
      const delay = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** retries);
      retries += 1;
      stateText.textContent = _("Connection lost. Reconnecting…");
      window.setTimeout(connect, delay / 2 + Math.random() * delay / 2);
    });
  }

  async function post(action, body) {
    showError("");
    const response = await fetch(`/api/cases/${encodeURIComponent(caseId)}/chat/${action}`, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body || {}),
    });
    if (!response.ok) {
      let reason = _("The action failed; try again.");
      try {
        reason = (await response.json()).error || reason;
      } catch (_error) {
        // not JSON: keep the general reason
      }
      showError(reason);
      return false;
    }
    return true;
  }

  async function loadCanned() {
    const language = panel.dataset.language;
    const response = await fetch(`/api/canned-responses?language=${encodeURIComponent(language)}`);
    if (!response.ok) {
      return;
    }
    const groups = new Map();
    for (const item of (await response.json()).responses) {
      if (!groups.has(item.language)) {
        const group = document.createElement("optgroup");
        group.label = item.language;
        groups.set(item.language, group);
        canned.append(group);
      }
      const option = document.createElement("option");
      option.value = item.text;
      option.textContent = item.title;
      groups.get(item.language).append(option);
    }
  }

  canned.addEventListener("change", () => {
    if (canned.value) {
      input.value = canned.value;
      input.focus();
    }
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = input.value;
    if (!text.trim()) {
      return;
    }
    submit.disabled = true;
    if (await post("lines", { text })) {
      input.value = "";
      canned.value = "";
    }
    refresh();
  });
  startButton.addEventListener("click", async () => {
    startButton.disabled = true;
    await post("start");
    startButton.disabled = false;
  });
  endButton.addEventListener("click", async () => {
    endButton.disabled = true;
    await post("end");
    endButton.disabled = false;
  });

  loadCanned();
  connect();
})();
