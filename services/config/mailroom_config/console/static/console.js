// Mailroom console: live regions refreshed without reloading the page, and the footer
// preview following the typing. Served as a file: the pages allow no inline script.
"use strict";
(function () {
  // sent/s between two counts, by the server's time of each count (tabs share a count:
  // a refresh may bring the same one again, which changes nothing)
  function rates(region, seen) {
    region.querySelectorAll("[data-sent]").forEach(function (cell) {
      const id = cell.dataset.campaign;
      const sent = Number(cell.dataset.sent);
      const at = Number(cell.dataset.at);
      const out = cell.querySelector("[data-rate]");
      const before = seen[id];
      if (before && at <= before.at) {
        if (out && before.shown) {
          out.textContent = before.shown;
        }
        return;
      }
      let shown = "";
      if (before && out) {
        shown = (Math.max(0, sent - before.sent) / ((at - before.at) / 1000)).toFixed(1);
        out.textContent = shown;
      }
      seen[id] = { sent: sent, at: at, shown: shown };
    });
  }

  function live(region) {
    const every = Number(region.dataset.every || 3000);
    const status = document.getElementById(region.dataset.status || "");
    const seen = {};
    async function refresh() {
      try {
        const response = await fetch(region.dataset.live, {
          credentials: "same-origin",
          headers: { Accept: "text/html" },
        });
        if (response.status === 401) {
          window.location.assign("/console/sign-in?next=" + encodeURIComponent(window.location.pathname));
          return;
        }
        if (!response.ok) {
          throw new Error("the server answered " + response.status);
        }
        const html = await response.text();
        const focused = region.contains(document.activeElement) ? document.activeElement.id : "";
        region.innerHTML = html;
        if (focused) {
          const again = document.getElementById(focused);
          if (again) {
            again.focus();
          }
        }
        rates(region, seen);
        if (status) {
          status.textContent = "Refreshed at " + new Date().toLocaleTimeString() + ".";
        }
      } catch (error) {
        if (status) {
          status.textContent = "Could not refresh: " + error.message + ". Trying again.";
        }
      }
      window.setTimeout(refresh, every);
    }
    rates(region, seen);
    window.setTimeout(refresh, every);
  }

  function preview(button) {
    const form = button.form;
    let timer = 0;
    form.addEventListener("input", function (event) {
      if (!event.target.matches("textarea, input[type=url]")) {
        return;
      }
      window.clearTimeout(timer);
      timer = window.setTimeout(function () {
        form.requestSubmit(button);
      }, 600);
    });
  }

  document.querySelectorAll("[data-live]").forEach(live);
  document.querySelectorAll("[data-preview]").forEach(preview);
})();
