// Alerts on every console page: a new priority-3 case, a case about to miss its SLA (polled
// from /api/queue), and a self-harm flag in a live chat (live_chat.js calls hotlineAlert).
// Each raises the banner; with the counselor's permission also a browser notification and a
// short tone. Case ids already alerted are remembered for this tab, so moving between pages
// does not ring again. Text only (textContent), never HTML.
"use strict";

(function () {
  const banner = document.getElementById("alerts");
  if (!banner) {
    return;
  }
  const catalog = JSON.parse(document.getElementById("console-messages").textContent || "{}");
  const _ = (text, values) =>
    (catalog[text] || text).replace(/%\((\w+)\)s/g, (whole, name) => String(values[name]));
  const list = banner.querySelector("ul");
  const enable = document.getElementById("alerts-enable");
  const seenKey = "hotline-alerted";
  const seen = new Set(JSON.parse(sessionStorage.getItem(seenKey) || "[]"));
  let audio = null;

  function tone() {
    if (localStorage.getItem("hotline-alert-sound") !== "on") {
      return;
    }
    try {
      audio = audio || new AudioContext();
      const oscillator = audio.createOscillator();
      const gain = audio.createGain();
      oscillator.frequency.value = 880;
      gain.gain.value = 0.1;
      oscillator.connect(gain).connect(audio.destination);
      oscillator.start();
      oscillator.stop(audio.currentTime + 0.3);
    } catch (_error) {
      // No sound on this browser: the banner and the notification still show.
    }
  }

  function raise(key, text, href) {
    if (seen.has(key)) {
      return;
    }
    seen.add(key);
    sessionStorage.setItem(seenKey, JSON.stringify([...seen]));
    const item = document.createElement("li");
    if (href) {
      const link = document.createElement("a");
      link.href = href;
      link.textContent = text;
      item.appendChild(link);
    } else {
      item.textContent = text;
    }
    list.appendChild(item);
    banner.hidden = false;
    if ("Notification" in window && Notification.permission === "granted") {
      new Notification("hotline", { body: text, tag: key });
    }
    tone();
  }
  window.hotlineAlert = raise;

  async function poll() {
    try {
      const response = await fetch("/api/queue", { credentials: "same-origin", cache: "no-store" });
      if (!response.ok) {
        return;
      }
      for (const item of (await response.json()).cases) {
        const href = "/console/cases/" + encodeURIComponent(item.id);
        const short = item.id.slice(0, 8);
        if (item.priority >= 3) {
          raise("urgent:" + item.id, _("New urgent case (priority 3): %(id)s", { id: short }), href);
        }
        if (item.sla === "due") {
          raise("sla:" + item.id, _("Case %(id)s is about to miss its SLA", { id: short }), href);
        }
      }
    } catch (_error) {
      // The queue page says when polling fails; the alerts try again on the next round.
    }
  }

  if (enable) {
    enable.hidden = !("Notification" in window);
    enable.addEventListener("click", async () => {
      localStorage.setItem("hotline-alert-sound", "on");
      audio = audio || new AudioContext();
      if ("Notification" in window) {
        await Notification.requestPermission();
      }
      enable.textContent = _("Notifications and sound are on");
      enable.disabled = true;
    });
  }
  document.getElementById("alerts-dismiss").addEventListener("click", () => {
    list.replaceChildren();
    banner.hidden = true;
  });
  poll();
  setInterval(poll, 10000);
})();
