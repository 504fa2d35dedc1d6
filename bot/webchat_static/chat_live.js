"use strict";
// The live chat with a counselor: while a handoff is open (the turn answer says `relay`), ask the
// server for the counselor's replies with a long poll, and show them as they come. Keeps nothing
// in the browser: the tab's conversation token is read from where chat.js keeps it.
(function () {
  var log = document.getElementById("log");
  var polling = false;

  function show(text) {
    var item = document.createElement("li");
    item.className = "bot";
    item.textContent = text;  // never innerHTML: a counselor's words are data, not markup
    log.appendChild(item);
    item.scrollIntoView({block: "end"});
  }

  function poll(attempt) {
    var token = sessionStorage.getItem("t");
    if (!token) { polling = false; return; }
    fetch("/chat/api/poll", {
      method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({token: token}),
      credentials: "omit"
    }).then(function (r) {
      if (r.status >= 500) { throw new Error("retry"); }
      return r.json();
    }).then(function (data) {
      (data.messages || []).forEach(function (m) { show(m.text); });
      if (data.relay) { poll(0); } else { polling = false; }
    }).catch(function () {
      // The server restarts or the network drops: held replies wait on the server; ask again.
      var delay = Math.min(1000 * Math.pow(2, attempt), 8000);
      setTimeout(function () { poll(attempt + 1); }, delay);
    });
  }

  document.addEventListener("hotline:turn", function (event) {
    if (event.detail && event.detail.relay && !polling) {
      polling = true;
      poll(0);
    }
  });
}());
