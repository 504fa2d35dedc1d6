// Renders the flow's Mermaid text, served from our origin (static/vendor/mermaid.min.js).
/* global mermaid */
"use strict";
(function () {
  if (typeof mermaid === "undefined") {
    return; // the source text stays readable
  }
  mermaid.initialize({ startOnLoad: false, securityLevel: "strict" });
  mermaid.run({ querySelector: "pre.mermaid" });
})();
