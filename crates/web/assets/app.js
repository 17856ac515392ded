// airlock dashboard: live pages without a framework. Every `data-refresh` seconds the page is
// fetched again and its <main> replaced (the server escapes everything it draws); a trend's
// image comes with a new time in its URL, so the chart follows. Nothing here writes anything.
(function () {
  "use strict";
  var main = document.querySelector("main[data-refresh]");
  if (!main) return;
  var every = Math.max(1, Number(main.getAttribute("data-refresh")) || 5) * 1000;
  function tick() {
    // Not while the user types in a form.
    var active = document.activeElement;
    if (active && active.tagName === "INPUT") { setTimeout(tick, every); return; }
    fetch(location.href, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (text) {
        if (text) {
          var doc = new DOMParser().parseFromString(text, "text/html");
          var fresh = doc.querySelector("main");
          if (fresh) main.replaceChildren.apply(main, Array.prototype.slice.call(fresh.childNodes));
        }
      })
      .catch(function () {})
      .then(function () { setTimeout(tick, every); });
  }
  setTimeout(tick, every);
})();
