// nodetrust fleet view: live updates. The pages are complete without this script; it only
// refreshes the page's <main> when the change feed reports a change (server-sent events).
(function () {
  "use strict";
  if (!window.EventSource || !window.fetch || !window.DOMParser) { return; }
  var badge = document.getElementById("live");
  var timer = null;
  var busy = false;
  function refresh() {
    timer = null;
    if (busy) { timer = setTimeout(refresh, 500); return; }
    busy = true;
    fetch(window.location.href, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (text) {
        if (text === null) { return; }
        // Parsed as an inert document: nothing in it runs.
        var doc = new DOMParser().parseFromString(text, "text/html");
        var fresh = doc.querySelector("main");
        var old = document.querySelector("main");
        if (fresh && old) {
          old.replaceWith(document.importNode(fresh, true));
          document.body.setAttribute("data-updated", String(Date.now()));
        }
      })
      .catch(function () {})
      .then(function () { busy = false; });
  }
  function schedule() {
    if (timer === null) { timer = setTimeout(refresh, 300); }
  }
  var es = new EventSource("/ui/events");
  es.addEventListener("open", function () {
    if (badge) { badge.hidden = false; badge.className = "live"; badge.textContent = "live"; }
  });
  es.addEventListener("error", function () {
    if (badge) { badge.className = "live off"; badge.textContent = "reconnecting"; }
  });
  es.addEventListener("change", schedule);
  es.addEventListener("resync", schedule);
}());
