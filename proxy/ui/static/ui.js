// molt dashboard: the few behaviours that need a script (the pages work without it).
// Selects with class "autosubmit" submit their form on change; buttons with
// data-confirm ask first. No inline handlers: the CSP allows only this file and htmx.
document.addEventListener("change", function (ev) {
  var el = ev.target;
  if (el && el.classList && el.classList.contains("autosubmit") && el.form) {
    el.form.submit();
  }
});
document.addEventListener("submit", function (ev) {
  var btn = ev.submitter;
  var msg = btn && btn.getAttribute("data-confirm");
  if (msg && !window.confirm(msg)) {
    ev.preventDefault();
  }
});
