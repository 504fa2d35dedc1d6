// Evidence previews on the case page are blurred behind a content warning (console.css) until
// the counselor chooses to see one: its button (a click, Enter or Space) takes the blur off,
// and puts it back. Served from our origin under the console's CSP; nothing inline.
"use strict";

(function () {
  for (const button of document.querySelectorAll(".evidence-reveal")) {
    const figure = document.getElementById(button.getAttribute("aria-controls"));
    if (!figure) {
      continue;
    }
    button.addEventListener("click", () => {
      const shown = figure.classList.toggle("revealed");
      button.setAttribute("aria-pressed", shown ? "true" : "false");
      button.textContent = shown ? button.dataset.hide : button.dataset.show;
    });
  }
})();
