// Progressive enhancement for the review screen. Forms work without it; it does two things:
// 1. on the page the launch ends at, it hands the session (in the URL fragment, which no server sees) to the
//    screen, which keeps it in a sealed cookie, and removes it from the address bar and history;
// 2. until a decision just made is carried out (written to the EHR, or recorded as a rejection), it reloads
//    the list now and then to show the outcome (for a minute at most).
(function () {
  "use strict";
  var start = document.getElementById("start");
  if (start) {
    var match = /(?:^#|&)session=([^&]+)/.exec(window.location.hash);
    var next = start.getAttribute("data-next");
    if (!match) { window.location.replace(next); return; }
    history.replaceState(null, "", window.location.pathname + window.location.search);
    fetch(start.getAttribute("data-session-url"), {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ session: decodeURIComponent(match[1]) })
    }).then(function (response) {
      if (response.ok) { window.location.replace(next); return; }
      return response.json().then(function (body) {
        start.textContent = (body.issue && body.issue[0] && body.issue[0].diagnostics) || "The session could not be opened.";
      });
    }).catch(function () { start.textContent = "The session could not be opened; launch ehrflow again."; });
    return;
  }
  if (document.querySelector("[data-awaiting]")) {
    // The count rides in the URL: storage may be refused in a third-party frame.
    var params = new URLSearchParams(window.location.search);
    var reloads = Number(params.get("n") || "0");
    if (reloads < 40) {
      params.set("n", String(reloads + 1));
      window.setTimeout(function () {
        window.location.replace(window.location.pathname + "?" + params.toString() + window.location.hash);
      }, 1500);
    }
  }
})();
