// Live refresh without reloading the page: parts marked data-refresh are fetched again from the
// server (already rendered) and swapped in. The request says it is a refresh, so an open page
// does not count as activity for the session's idle timeout.
(function () {
  "use strict";
  function refresh(box) {
    var seconds = parseInt(box.getAttribute("data-refresh"), 10) || 10;
    setInterval(function () {
      if (document.hidden) { return; }
      fetch(box.getAttribute("data-src"), { credentials: "same-origin", headers: { "X-CX-Refresh": "1" } })
        .then(function (response) {
          if (response.redirected || response.status === 401) { window.location.reload(); return null; }
          return response.ok ? response.text() : null;
        })
        .then(function (html) { if (html !== null && html !== undefined) { box.innerHTML = html; } })
        .catch(function () { /* the hub is away for a moment: keep what is shown */ });
    }, seconds * 1000);
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-refresh]").forEach(refresh);
  });
}());
