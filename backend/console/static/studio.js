// The studio's editor: line numbers beside the textarea, kept in step while typing and
// scrolling; `data-goto` puts the cursor on a finding's line.
"use strict";
(function () {
  const area = document.getElementById("studio-text");
  const gutter = document.getElementById("studio-gutter");
  if (!area || !gutter) {
    return;
  }
  function number() {
    const count = area.value.split("\n").length;
    const lines = [];
    for (let n = 1; n <= count; n += 1) {
      lines.push(String(n));
    }
    gutter.textContent = lines.join("\n");
    gutter.scrollTop = area.scrollTop;
  }
  area.addEventListener("input", number);
  area.addEventListener("scroll", function () {
    gutter.scrollTop = area.scrollTop;
  });
  number();
  const goto = parseInt(area.dataset.goto || "", 10);
  if (goto > 0) {
    const before = area.value.split("\n").slice(0, goto - 1).join("\n");
    const start = goto > 1 ? before.length + 1 : 0;
    const end = area.value.indexOf("\n", start);
    area.focus();
    area.setSelectionRange(start, end === -1 ? area.value.length : end);
    const lineHeight = area.scrollHeight / Math.max(1, area.value.split("\n").length);
    area.scrollTop = Math.max(0, (goto - 5) * lineHeight);
    gutter.scrollTop = area.scrollTop;
  }
})();
