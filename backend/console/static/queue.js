// The live queue: polls /api/queue, ticks waiting times and SLA timers every second, and keeps
// the counselor's shift alive while this page is open. Text only (textContent, never HTML), so
// nothing a report carries can become markup here.
"use strict";

(function () {
  const table = document.getElementById("queue");
  if (!table) {
    return;
  }
  // Translated through the console's catalog, embedded in every page (templates/base.html).
  const catalog = JSON.parse(document.getElementById("console-messages").textContent || "{}");
  const _ = (text, values) =>
    (catalog[text] || text).replace(/%\((\w+)\)s/g, (whole, name) => String(values[name]));
  const body = table.tBodies[0];
  const note = document.getElementById("queue-note");
  const empty = document.getElementById("queue-empty");
  const pollMs = Number(table.dataset.pollS || "5") * 1000;
  let cases = [];
  let fetchedAt = Date.now();

  function minutes(seconds) {
    return _("%(n)s min", { n: Math.floor(seconds / 60) });
  }

  // The same three states as backend/console/queue.py `sla_state`, in words as well as colour.
  function sla(waiting, item) {
    if (waiting >= item.sla_s) {
      return ["missed", _("SLA missed by %(time)s", { time: minutes(waiting - item.sla_s) })];
    }
    if (waiting >= item.warning_s) {
      return ["due", _("SLA due soon: %(time)s left", { time: minutes(item.sla_s - waiting) })];
    }
    return ["ok", _("on time: %(time)s left", { time: minutes(item.sla_s - waiting) })];
  }

  function cell(row, text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) {
      td.className = className;
    }
    row.appendChild(td);
    return td;
  }

  function render() {
    const rows = cases.map(function (item) {
      const row = document.createElement("tr");
      row.dataset.case = item.id;
      const link = document.createElement("a");
      link.href = "/console/cases/" + encodeURIComponent(item.id);
      link.textContent = item.id.slice(0, 8);
      cell(row, "").appendChild(link);
      cell(row, String(item.priority));
      cell(row, item.category);
      cell(row, item.language);
      cell(row, item.channel + (item.unreachable ? " · " + _("victim unreachable") : ""));
      cell(row, "", "waiting");
      cell(row, "", "sla");
      return row;
    });
    body.replaceChildren.apply(body, rows);
    empty.hidden = cases.length > 0;
    tick();
  }

  function tick() {
    const elapsed = Math.floor((Date.now() - fetchedAt) / 1000);
    cases.forEach(function (item, index) {
      const row = body.rows[index];
      if (!row) {
        return;
      }
      const waiting = item.waiting_s + elapsed;
      const [state, text] = sla(waiting, item);
      row.className = "priority-" + item.priority + " sla-" + state;
      row.querySelector(".waiting").textContent = minutes(waiting);
      row.querySelector(".sla").textContent = text;
    });
  }

  async function poll() {
    try {
      const response = await fetch("/api/queue", { credentials: "same-origin", cache: "no-store" });
      if (response.status === 401) {
        note.textContent = _("You are signed out. Reload the page to sign in again.");
        return;
      }
      if (!response.ok) {
        throw new Error("status " + response.status);
      }
      const data = await response.json();
      cases = data.cases;
      fetchedAt = Date.now();
      note.textContent = "";
      const count = document.getElementById("on-shift-count");
      if (count) {
        count.textContent = String(data.counselors_on_shift);
      }
      render();
    } catch (error) {
      note.textContent = _("The queue could not be refreshed; retrying.");
    }
  }

  const shift = document.getElementById("shift");

  async function heartbeat() {
    if (!shift || shift.dataset.onShift !== "true") {
      return;
    }
    try {
      const response = await fetch("/api/shift/heartbeat", {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRF-Token": shift.dataset.csrf },
      });
      const data = await response.json();
      if (!data.on_shift) {
        shift.dataset.onShift = "false";
        document.getElementById("shift-state").textContent =
          _("Your shift has lapsed while this page was closed or offline. Reload and go on shift again.");
      }
    } catch (error) {
      // A lost heartbeat is harmless: the next one comes well inside the presence's expiry.
    }
  }

  poll();
  setInterval(poll, pollMs);
  setInterval(tick, 1000);
  if (shift) {
    setInterval(heartbeat, Number(shift.dataset.heartbeatS || "30") * 1000);
  }
})();
