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
    // The server ends the conversation too (a counselor in a live chat learns the victim left,
    // and the session is erased now, not when it expires). keepalive: the request outlives the
    // page, which is replaced at once, without waiting for an answer.
    var existing = null;
    try { existing = sessionStorage.getItem("t"); } catch (e) { /* storage may be disabled */ }
    if (existing) {
      fetch("/chat/api/turn", {
        method: "POST",
        headers: {"Content-Type": "application/json"},
        body: JSON.stringify({token: existing, button: "quick_exit", language: language.value}),
        credentials: "omit",
        keepalive: true
      }).catch(function () { /* the page is gone; the session expires on its own */ });
    }
    try { sessionStorage.clear(); } catch (e) { /* storage may be disabled */ }
    window.location.replace(SAFE_PAGE);
  }

  function show(text, who, receipt) {
    var item = document.createElement("li");
    item.className = who;
    item.textContent = text;  // never innerHTML: texts are data, not markup
    if (receipt) { item.appendChild(receiptBox(receipt)); }
    log.appendChild(item);
    item.scrollIntoView({block: "end"});
  }

  // The receipt code with a copy button. The Clipboard API needs a secure context (https, or
  // http on localhost); elsewhere, or if it is refused, the code is selected for a manual copy.
  // The confirmation is a status region of its own, so a screen reader says it.
  function receiptBox(code) {
    var box = document.createElement("div");
    box.className = "receipt";
    box.setAttribute("role", "group");
    box.setAttribute("aria-label", "접수 번호 / Receipt code");
    var value = document.createElement("code");
    value.className = "receipt-code";
    value.textContent = code;
    var button = document.createElement("button");
    button.type = "button";
    button.className = "copy";
    button.textContent = "복사 / Copy";
    var done = document.createElement("span");
    done.className = "copied";
    done.setAttribute("role", "status");
    done.setAttribute("aria-live", "polite");
    function say(text) {
      done.textContent = "";  // a second copy is announced again
      setTimeout(function () { done.textContent = text; }, 100);
    }
    function selectForManualCopy() {
      var range = document.createRange();
      range.selectNodeContents(value);
      var selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      var copied = false;
      try { copied = document.execCommand("copy"); } catch (e) { copied = false; }
      say(copied ? "복사했어요 / Copied"
        : "번호를 선택했어요. 복사해 주세요 / Selected: copy it with Ctrl+C or a long press");
    }
    button.addEventListener("click", function () {
      if (window.isSecureContext && navigator.clipboard && navigator.clipboard.writeText) {
        navigator.clipboard.writeText(code).then(function () {
          say("복사했어요 / Copied");
        }, selectForManualCopy);
      } else {
        selectForManualCopy();
      }
    });
    box.appendChild(value);
    box.appendChild(button);
    box.appendChild(done);
    return box;
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
    // Focus goes to where the answer is given, never back to the top of the page: the first
    // choice, or the text box when the step asks for words. The log (aria-live) reads the text.
    if (buttons.length) { choices.firstChild.focus(); } else { message.focus(); }
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
      if (r.status >= 500) {
        // Not served (503 when the server is busy): the same turn id again after Retry-After,
        // so the message is neither lost nor handled twice.
        var failed = new Error("retry");
        failed.afterS = parseFloat(r.headers.get("Retry-After"));
        throw failed;
      }
      return r.json();
    }).then(function (data) {
      queue.shift();
      setStatus("");
      var buttons = [];
      if (data.error) { show(data.error, "bot"); }
      (data.messages || []).forEach(function (m) {
        show(m.text, "bot", m.receipt);
        buttons = m.buttons;
      });
      showButtons(buttons || []);
      if (data.ended) { sessionStorage.removeItem("t"); }
      document.dispatchEvent(new CustomEvent("hotline:turn", {detail: data}));  // chat_live.js
      drain(0);
    }).catch(function (failed) {
      setStatus("연결을 다시 잇는 중이에요. 보낸 메시지는 그대로 전해져요. / Reconnecting; your message will be delivered.");
      var delay = Math.min(1000 * Math.pow(2, attempt), 8000);
      if (failed && failed.afterS > 0) {
        // What the server asked for, spread a little so a crowd of pages does not come back
        // in the same instant.
        delay = Math.min(failed.afterS * 1000, 30000) * (1 + Math.random() / 2);
      }
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
