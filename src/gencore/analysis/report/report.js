"use strict";
(function () {
  // Zoom the icicle: a click makes that node the full width; the top bar zooms back out.
  document.querySelectorAll("svg.icicle").forEach(function (svg) {
    var W = svg.viewBox.baseVal.width;
    var nodes = Array.prototype.slice.call(svg.querySelectorAll("g"));
    function zoom(x0, w0, d0) {
      nodes.forEach(function (g) {
        var x = parseFloat(g.dataset.x), w = parseFloat(g.dataset.w), d = +g.dataset.d;
        var inside = x >= x0 - 1e-9 && x + w <= x0 + w0 + 1e-9;
        var show = d === 0 || (inside && d >= d0) || (d < d0 && x <= x0 + 1e-9 && x + w >= x0 + w0 - 1e-9);
        g.style.display = show ? "" : "none";
        if (!show) return;
        var nx = d === 0 ? 0 : Math.max(0, (x - x0) / w0) * W;
        var nw = d === 0 ? W : Math.min(w / w0, 1) * W;
        var rect = g.querySelector("rect"), text = g.querySelector("text");
        rect.setAttribute("x", nx.toFixed(1));
        rect.setAttribute("width", Math.max(nw - 1, 0.5).toFixed(1));
        text.setAttribute("x", (nx + 3).toFixed(1));
        var label = g.dataset.label || (g.dataset.label = g.querySelector("title").textContent.split(" — ")[0].replace(/: \d+ threads?$/, ""));
        var chars = Math.floor(nw / 7);
        text.textContent = label.length <= chars ? label : (chars > 3 ? label.slice(0, chars - 1) + "\u2026" : "");
      });
    }
    nodes.forEach(function (g) {
      g.addEventListener("click", function () {
        if (+g.dataset.d === 0) zoom(0, 1, 0);
        else zoom(parseFloat(g.dataset.x), parseFloat(g.dataset.w), +g.dataset.d);
      });
    });
  });
  // Filter the thread groups by a word of their functions, files, ids or names.
  var filter = document.getElementById("filter");
  var groups = Array.prototype.slice.call(document.querySelectorAll("details.group"));
  if (filter) {
    filter.addEventListener("input", function () {
      var q = filter.value.trim().toLowerCase();
      groups.forEach(function (g) {
        g.hidden = q !== "" && g.dataset.search.indexOf(q) < 0;
        if (q !== "" && !g.hidden) g.open = true;
      });
    });
  }
  function setAll(open) {
    document.querySelectorAll("details").forEach(function (d) { d.open = open; });
  }
  var openall = document.getElementById("openall"), closeall = document.getElementById("closeall");
  if (openall) openall.addEventListener("click", function () { setAll(true); });
  if (closeall) closeall.addEventListener("click", function () { setAll(false); });
  // Printing shows everything that is folded on screen.
  var closed = [];
  window.addEventListener("beforeprint", function () {
    closed = Array.prototype.filter.call(document.querySelectorAll("details"), function (d) { return !d.open; });
    closed.forEach(function (d) { d.open = true; });
  });
  window.addEventListener("afterprint", function () {
    closed.forEach(function (d) { d.open = false; });
    closed = [];
  });
})();
