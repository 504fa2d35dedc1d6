"use strict";
// The victim's side of the web chat. Keeps nothing but the conversation token for this tab.
(function () {
  var SAFE_PAGE = "https://www.google.com/search?q=%EB%82%A0%EC%94%A8";
  var log = document.getElementById("log");
  var choices = document.getElementById("buttons");
  var composer = document.getElementById("composer");
  var message = document.getElementById("message");
  var language = document.getElementById("language");

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

  function send(body) {
    body.token = token();
    body.language = language.value;
    return fetch("/chat/api/turn", {
      method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify(body),
      credentials: "omit"
    }).then(function (r) { return r.json(); }).then(function (data) {
      var buttons = [];
      (data.messages || []).forEach(function (m) { show(m.text, "bot"); buttons = m.buttons; });
      showButtons(buttons || []);
      if (data.ended) { sessionStorage.removeItem("t"); }
    }).catch(function () {
      show("연결이 잠시 끊겼어요. 다시 보내 주세요. / Connection lost, please send again.", "bot");
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
