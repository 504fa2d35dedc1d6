"use strict";
// The victim's side of the web chat. Keeps nothing but the conversation token for this tab.
(function () {
  var SAFE_PAGE = "https://www.google.com/search?q=%EB%82%A0%EC%94%A8";
  var log = document.getElementById("log");
  var choices = document.getElementById("buttons");
  var composer = document.getElementById("composer");
  var message = document.getElementById("message");
  var language = document.getElementById("language");
  var status = document.getElementById("status");

  function token() {
    var existing = sessionStorage.getItem("t");
    if (existing) { return existing; }
    var bytes = new Uint8Array(32);
    crypto.getRandomValues(bytes);
    var text = btoa(String.fromCharCode.apply(null, bytes))
      .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
    sessionStorage.setItem("t", text);
    return text;
  }

  function quickExit() {
    try { sessionStorage.clear(); } catch (e) { /* storage may be disabled */ }
    window.location.replace(SAFE_PAGE);
  }

  function show(text, who) {
    var item = document.createElement("li");
    item.className = who;
    item.textContent = text;  // never innerHTML: texts are data, not markup
    log.appendChild(item);
    item.scrollIntoView({block: "end"});
  }

  function showButtons(buttons) {
    choices.textContent = "";
    buttons.forEach(function (b) {
      var button = document.createElement("button");
      button.type = "button";
      button.textContent = b.label;
      button.addEventListener("click", function () { show(b.label, "me"); send({button: b.id}); });
      choices.appendChild(button);
    });
    if (buttons.length) { choices.firstChild.focus(); }
  }

  // Turns wait in order in memory; a turn is retried with the same id until the server
  // answers, so a lost connection or a server restart loses no message and runs none twice.
  var queue = [];
  var sending = false;

  function newTurnId() {
    var bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return btoa(String.fromCharCode.apply(null, bytes))
      .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function setStatus(text) {
    status.textContent = text;
    status.hidden = !text;
  }

  function send(body) {
    body.turn = newTurnId();
    queue.push(body);
    if (!sending) { drain(0); }
  }

  function drain(attempt) {
    if (!queue.length) { sending = false; return; }
    sending = true;
    var body = queue[0];
    body.token = token();
    body.language = language.value;
    fetch("/chat/api/turn", {
      method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify(body),
      credentials: "omit"
    }).then(function (r) {
      if (r.status >= 500) { throw new Error("retry"); }
      return r.json();
    }).then(function (data) {
      queue.shift();
      setStatus("");
      var buttons = [];
      if (data.error) { show(data.error, "bot"); }
      (data.messages || []).forEach(function (m) { show(m.text, "bot"); buttons = m.buttons; });
      showButtons(buttons || []);
      if (data.ended) { sessionStorage.removeItem("t"); }
      document.dispatchEvent(new CustomEvent("hotline:turn", {detail: data}));  // chat_live.js
      drain(0);
    }).catch(function () {
      setStatus("연결을 다시 잇는 중이에요. 보낸 메시지는 그대로 전해져요. / Reconnecting; your message will be delivered.");
      var delay = Math.min(1000 * Math.pow(2, attempt), 8000);
      setTimeout(function () { drain(attempt + 1); }, delay);
    });
  }

  composer.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = message.value.trim();
    if (!text) { return; }
    show(text, "me");
    message.value = "";
    send({text: text});
  });
  message.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); composer.requestSubmit(); }
  });
  document.getElementById("quick-exit").addEventListener("click", quickExit);
  document.addEventListener("keydown", function (event) { if (event.key === "Escape") { quickExit(); } });
  language.addEventListener("change", function () { document.documentElement.lang = language.value; });
  send({text: "/start"});
}());
