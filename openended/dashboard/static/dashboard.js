/* openended live campaign dashboard: polls the JSON route and redraws every figure as inline SVG.
 *
 * Hand-written, no libraries and nothing from the network but the JSON route (the page must work
 * without internet). window.openendedDashboard holds the last data, how many polls succeeded and
 * failed, and when the page last drew: a test (or the console) reads it. Every figure's <svg> says
 * what it drew in data-* attributes (data-points, data-last, data-occupied ...).
 */
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  var body = document.body;
  var DATA_URL = body.getAttribute("data-data-url");
  var POLL_MS = parseInt(body.getAttribute("data-poll-ms"), 10) || 2000;
  var state = { data: null, polls: 0, errors: 0, lastError: null, drawnAt: null };
  window.openendedDashboard = state;

  // ------------------------------------------------------------------ helpers

  function svgEl(tag, attrs, parent) {
    var el = document.createElementNS(SVG, tag);
    for (var k in attrs) { if (attrs[k] !== null && attrs[k] !== undefined) el.setAttribute(k, attrs[k]); }
    if (parent) parent.appendChild(el);
    return el;
  }
  function htmlEl(tag, attrs, parent, text) {
    var el = document.createElement(tag);
    for (var k in attrs) { el.setAttribute(k, attrs[k]); }
    if (text !== undefined) el.textContent = text;
    if (parent) parent.appendChild(el);
    return el;
  }
  function text(parent, x, y, s, attrs) {
    var t = svgEl("text", Object.assign({ x: x, y: y }, attrs || {}), parent);
    t.textContent = s;
    return t;
  }
  function isNum(v) { return typeof v === "number" && isFinite(v); }
  function fmt(v) {
    if (!isNum(v)) return "\u2013";
    if (Number.isInteger(v)) return v.toLocaleString("en-US");
    var a = Math.abs(v);
    if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(2);
    return String(parseFloat(v.toPrecision(4)));
  }
  function pct(v) { return isNum(v) ? (100 * v).toFixed(1) + "%" : "\u2013"; }
  function last(xs) { return xs && xs.length ? xs[xs.length - 1] : null; }
  function figure(id) {
    var el = document.querySelector("#" + id + " .body");
    el.textContent = "";
    return el;
  }
  function note(parent, s) { return htmlEl("p", { "class": "note" }, parent, s); }

  // viridis, 9 stops
  var VIRIDIS = ["#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962", "#addc30", "#fde725"];
  function hex(c) { return [1, 3, 5].map(function (i) { return parseInt(c.substr(i, 2), 16); }); }
  function viridis(t) {
    t = Math.max(0, Math.min(1, isNum(t) ? t : 0)) * (VIRIDIS.length - 1);
    var i = Math.min(Math.floor(t), VIRIDIS.length - 2), f = t - i;
    var a = hex(VIRIDIS[i]), b = hex(VIRIDIS[i + 1]);
    return "rgb(" + [0, 1, 2].map(function (k) { return Math.round(a[k] + f * (b[k] - a[k])); }).join(",") + ")";
  }
  function extent(lists) {
    var lo = Infinity, hi = -Infinity;
    lists.forEach(function (xs) { xs.forEach(function (v) { if (isNum(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); } }); });
    if (lo === Infinity) return null;
    if (lo === hi) { var pad = Math.abs(lo) * 0.05 || 1; lo -= pad; hi += pad; }
    return [lo, hi];
  }
  function ticks(lo, hi, n) {
    var step = Math.pow(10, Math.floor(Math.log10((hi - lo) / n)));
    [1, 2, 5, 10].some(function (m) { if ((hi - lo) / (step * m) <= n) { step *= m; return true; } return false; });
    var out = [];
    for (var v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
    return out;
  }

  // ------------------------------------------------------------------ line chart

  /* opts: {title, xs, series: [{name, values, color}], xLabel, hline: {value, label}, yFormat} */
  function lineChart(parent, opts) {
    var W = 330, H = 190, L = 52, R = 10, T = 22, B = 30;
    var svg = svgEl("svg", { viewBox: "0 0 " + W + " " + H, width: W, height: H, "class": "chart",
                             "data-chart": opts.key || opts.title }, parent);
    text(svg, L, 13, opts.title, { "font-weight": "bold" });
    var xs = opts.xs, lists = opts.series.map(function (s) { return s.values; });
    if (opts.hline && isNum(opts.hline.value)) lists = lists.concat([[opts.hline.value]]);
    var xr = extent([xs]), yr = extent(lists);
    var drawn = 0;
    opts.series.forEach(function (s) { s.values.forEach(function (v) { if (isNum(v)) drawn++; }); });
    svg.setAttribute("data-points", String(drawn));
    if (!xr || !yr || drawn === 0) {
      text(svg, W / 2, H / 2, "no data yet", { "text-anchor": "middle", fill: "#888" });
      return svg;
    }
    function X(v) { return L + (v - xr[0]) / (xr[1] - xr[0]) * (W - L - R); }
    function Y(v) { return H - B - (v - yr[0]) / (yr[1] - yr[0]) * (H - T - B); }
    var yf = opts.yFormat || fmt;
    ticks(yr[0], yr[1], 4).forEach(function (v) {
      svgEl("line", { x1: L, x2: W - R, y1: Y(v), y2: Y(v), stroke: "#eee" }, svg);
      text(svg, L - 4, Y(v) + 3, yf(v), { "text-anchor": "end" });
    });
    ticks(xr[0], xr[1], 4).forEach(function (v) {
      text(svg, X(v), H - B + 13, fmt(v), { "text-anchor": "middle" });
    });
    svgEl("rect", { x: L, y: T, width: W - L - R, height: H - T - B, fill: "none", stroke: "#bbb" }, svg);
    text(svg, (L + W - R) / 2, H - 3, opts.xLabel || "", { "text-anchor": "middle", fill: "#666" });
    if (opts.hline && isNum(opts.hline.value)) {
      svgEl("line", { x1: L, x2: W - R, y1: Y(opts.hline.value), y2: Y(opts.hline.value), stroke: "#d62728",
                      "stroke-dasharray": "4 3", "data-hline": String(opts.hline.value) }, svg);
      text(svg, W - R - 2, Y(opts.hline.value) - 3, opts.hline.label, { "text-anchor": "end", fill: "#d62728" });
    }
    var lx = L + 4;
    opts.series.forEach(function (s) {
      var d = "", pen = false, n = 0;
      for (var i = 0; i < xs.length; i++) {
        var v = s.values[i];
        if (!isNum(v) || !isNum(xs[i])) { pen = false; continue; }
        d += (pen ? "L" : "M") + X(xs[i]).toFixed(1) + "," + Y(v).toFixed(1);
        pen = true; n++;
      }
      var path = svgEl("path", { d: d || "M0,0", fill: "none", stroke: s.color, "stroke-width": 1.6,
                                 "data-series": s.name, "data-points": String(n),
                                 "data-last": String(last(s.values.filter(isNum))) }, svg);
      if (n === 1) { path.setAttribute("stroke-linecap", "round"); path.setAttribute("stroke-width", 4); }
      if (opts.series.length > 1) {
        svgEl("rect", { x: lx, y: T + 4, width: 10, height: 3, fill: s.color }, svg);
        text(svg, lx + 13, T + 9, s.name, { fill: "#555" });
        lx += 18 + 6 * s.name.length;
      }
    });
    return svg;
  }

  // ------------------------------------------------------------------ figures

  var HALO = { "font-weight": "bold", stroke: "#fff", "stroke-width": 3, "paint-order": "stroke" };

  function drawHeadline(d) {
    var el = document.getElementById("headline");
    el.textContent = "";
    var t = d.totals, p = d.progress;
    var cards = [
      ["status", "run status", d.run.status],
      ["children_done", "children done", t.children_done],
      ["children_failed", "failed", t.children_failed],
      ["pending", "in flight / pending", t.pending],
      ["archive_size", "archive size", t.archive_size],
      ["coverage", "coverage", last(p.coverage)],
      ["qd_score", "QD score", last(p.qd_score)],
      ["best_fitness", "best fitness", t.best_fitness],
      ["best_agent", "best agent", t.best_agent],
      ["children_per_second", "children / s (last 30 s)", t.children_per_second]
    ];
    cards.forEach(function (c) {
      var v = c[2];
      var card = htmlEl("div", { "class": "card", "data-key": c[0], "data-value": v === null ? "" : String(v) }, el);
      htmlEl("span", { "class": "label" }, card, c[1]);
      var shown = c[0] === "coverage" ? pct(v) : (typeof v === "string" ? v : fmt(v));
      if (c[0] === "best_agent" && isNum(v)) {
        htmlEl("a", { "class": "value", href: body.getAttribute("data-db-url") + "/agents/" + v }, card, "#" + v);
      } else {
        htmlEl("span", { "class": "value" }, card, shown);
      }
    });
  }

  function drawProgress(d) {
    var el = figure("fig-progress"), p = d.progress;
    if (!p.rows) { note(el, "no data yet: " + p.note); return; }
    if (p.note) note(el, p.note);
    var grid = htmlEl("div", { "class": "small-multiples" }, el);
    var xs = p.elapsed, xl = "seconds since the first stats row";
    lineChart(grid, { key: "children", title: "children finished", xs: xs, xLabel: xl, series: [
      { name: "done", values: p.children_done, color: "#1f77b4" },
      { name: "failed", values: p.children_failed, color: "#d62728" }] });
    lineChart(grid, { key: "fitness", title: "fitness", xs: xs, xLabel: xl,
      hline: { value: d.run.target_fitness, label: "target " + fmt(d.run.target_fitness) }, series: [
      { name: "best", values: p.best_fitness, color: "#2ca02c" },
      { name: "mean", values: p.mean_fitness, color: "#9467bd" }] });
    lineChart(grid, { key: "archive_size", title: "archive size", xs: xs, xLabel: xl, series: [
      { name: "archive size", values: p.archive_size, color: "#8c564b" }] });
    lineChart(grid, { key: "coverage", title: "coverage", xs: xs, xLabel: xl, yFormat: pct, series: [
      { name: "coverage", values: p.coverage, color: "#17becf" }] });
    lineChart(grid, { key: "qd_score", title: "QD score", xs: xs, xLabel: xl, series: [
      { name: "QD score", values: p.qd_score, color: "#ff7f0e" }] });
    lineChart(grid, { key: "children_per_second", title: "children finished per second", xs: xs, xLabel: xl,
      series: [{ name: "children / s", values: p.children_per_second, color: "#7f7f7f" }] });
    htmlEl("p", { "class": "caption" }, el, p.rows + " stats rows" +
      (p.rows > p.elapsed.length ? " (" + p.elapsed.length + " drawn)" : ""));
  }

  function drawHeatmap(d) {
    var el = figure("fig-heatmap"), hm = d.heatmap;
    if (hm.note) note(el, hm.note);
    if (!hm.x_edges.length) return;
    var nx = hm.x_edges.length - 1, ny = hm.y_edges.length - 1;
    var x0 = hm.x_edges[0], x1 = hm.x_edges[nx], y0 = hm.y_edges[0], y1 = hm.y_edges[ny];
    var L = 44, R = 90, T = 10, B = 34, maxW = 760, maxH = 420, pw, ph;
    if (hm.n_descriptors < 2) { pw = maxW; ph = 40; }
    else {  // equal scales on both axes, so a map is not distorted
      var s = Math.min(maxW / (x1 - x0), maxH / (y1 - y0));
      pw = (x1 - x0) * s; ph = (y1 - y0) * s;
      if (pw < 200 || ph < 60) { pw = Math.max(pw, 200); ph = Math.max(ph, 60); }
    }
    var W = L + pw + R, H = T + ph + B;
    var svg = svgEl("svg", { viewBox: "0 0 " + W + " " + H, width: W, height: H, "data-occupied": String(hm.occupied),
                             "data-elites": String(hm.elites), "data-cells": String(hm.cells) }, el);
    function X(v) { return L + (v - x0) / (x1 - x0) * pw; }
    function Y(v) { return T + ph - (v - y0) / (y1 - y0) * ph; }  // descriptor y grows upwards
    var vals = [];
    hm.values.forEach(function (row) { row.forEach(function (v) { if (isNum(v)) vals.push(v); }); });
    var lo = Math.min.apply(null, vals.length ? vals : [0]), hi = Math.max.apply(null, vals.length ? vals : [1]);
    svgEl("rect", { x: L, y: T, width: pw, height: ph, fill: "#e6e6e6" }, svg);
    var cells = svgEl("g", { "class": "cells" }, svg);
    for (var r = 0; r < ny; r++) {
      for (var c = 0; c < nx; c++) {
        var v = hm.values[r][c];
        if (!isNum(v)) continue;
        var xa = X(hm.x_edges[c]), xb = X(hm.x_edges[c + 1]), ya = Y(hm.y_edges[r + 1]), yb = Y(hm.y_edges[r]);
        var rect = svgEl("rect", { x: xa, y: ya, width: Math.max(xb - xa, 0.5), height: Math.max(yb - ya, 0.5),
                                   fill: viridis(hi > lo ? (v - lo) / (hi - lo) : 1), "class": "cell",
                                   "data-value": String(v) }, cells);
        svgEl("title", {}, rect).textContent = hm.x_name + " " + fmt(hm.x_edges[c]) + "\u2013" + fmt(hm.x_edges[c + 1]) +
          (hm.y_name ? ", " + hm.y_name + " " + fmt(hm.y_edges[r]) + "\u2013" + fmt(hm.y_edges[r + 1]) : "") +
          ": best fitness " + fmt(v);
      }
    }
    var m = hm.task_map;
    if (m) {
      var g = svgEl("g", { "class": "task-map", "data-walls": String(m.walls.length) }, svg);
      m.walls.forEach(function (w) {
        svgEl("line", { x1: X(w[0]), y1: Y(w[1]), x2: X(w[2]), y2: Y(w[3]), stroke: "#000", "stroke-width": 2.5,
                        "stroke-linecap": "round" }, g);
      });
      svgEl("circle", { cx: X(m.start[0]), cy: Y(m.start[1]), r: 6, fill: "#fff", stroke: "#000", "stroke-width": 2,
                        "class": "start" }, g);
      text(g, X(m.start[0]) + 9, Y(m.start[1]) + 4, "start", HALO);
      svgEl("rect", { x: X(m.goal[0]) - 6, y: Y(m.goal[1]) - 6, width: 12, height: 12, fill: "#d62728",
                      stroke: "#000", "class": "goal" }, g);
      text(g, X(m.goal[0]) - 9, Y(m.goal[1]) + 4, "exit", Object.assign({ "text-anchor": "end" }, HALO));
    }
    if (hm.best) {
      svgEl("circle", { cx: X(hm.best[0]), cy: hm.n_descriptors > 1 ? Y(hm.best[1]) : T + ph / 2, r: 5,
                        fill: "none", stroke: "#d62728", "stroke-width": 2, "class": "best" }, svg);
    }
    svgEl("rect", { x: L, y: T, width: pw, height: ph, fill: "none", stroke: "#999" }, svg);
    [x0, x1].forEach(function (v) { text(svg, X(v), T + ph + 13, fmt(v), { "text-anchor": "middle" }); });
    text(svg, L + pw / 2, H - 4, hm.x_name, { "text-anchor": "middle" });
    if (hm.n_descriptors > 1) {
      [y0, y1].forEach(function (v) { text(svg, L - 4, Y(v) + 3, fmt(v), { "text-anchor": "end" }); });
      text(svg, 12, T + ph / 2, hm.y_name, { "text-anchor": "middle", transform: "rotate(-90 12 " + (T + ph / 2) + ")" });
    }
    // colour bar
    var grad = svgEl("linearGradient", { id: "viridis", x1: 0, x2: 0, y1: 1, y2: 0 }, svgEl("defs", {}, svg));
    VIRIDIS.forEach(function (col, i) { svgEl("stop", { offset: i / (VIRIDIS.length - 1), "stop-color": col }, grad); });
    var cbH = Math.min(ph, 160);
    svgEl("rect", { x: L + pw + 14, y: T, width: 12, height: cbH, fill: "url(#viridis)", stroke: "#999" }, svg);
    text(svg, L + pw + 30, T + 9, vals.length ? fmt(hi) : "", {});
    text(svg, L + pw + 30, T + cbH, vals.length ? fmt(lo) : "", {});
    htmlEl("p", { "class": "caption" }, el, hm.elites.toLocaleString("en-US") + " elites in " + hm.occupied + " of " +
      hm.cells + " cells of " + hm.x_name + (hm.y_name ? " \u00d7 " + hm.y_name : "") +
      "; colour: the best fitness in the cell; grey: no elite there yet" +
      (hm.best ? "; red ring: the best agent" : "") +
      (m ? "; black: the walls of map \u201c" + m.name + "\u201d" : "") + ".");
  }

  function drawLineage(d) {
    var el = figure("fig-lineage"), steps = d.lineage;
    if (!steps.length) { note(el, "no data yet: " + (d.notes.lineage || "no lineage")); return; }
    lineChart(el, { key: "lineage", title: "fitness along the lineage", xs: steps.map(function (s) { return s.depth; }),
      xLabel: "depth (root = 0)", hline: { value: d.run.target_fitness, label: "target" },
      series: [{ name: "fitness", values: steps.map(function (s) { return s.fitness; }), color: "#2ca02c" }] });
    var first = steps[0], best = steps[steps.length - 1];
    htmlEl("p", { "class": "caption", "data-length": String(d.lineage_length), "data-best": String(best.id) }, el,
      "root #" + first.id + " \u2192 best #" + best.id + " (fitness " + fmt(best.fitness) + "), " +
      d.lineage_length + " agents" + (d.lineage_length > steps.length ? ", " + steps.length + " drawn" : "") +
      "; operators: " + Array.from(new Set(steps.slice(1).map(function (s) { return s.operator; }))).join(", "));
  }

  function bars(el, key, rows, label, value, caption, color) {
    var W = 440, rowH = 22, L = 150, T = 4;
    var H = T + rows.length * rowH + 4, max = Math.max.apply(null, rows.map(value).concat([1e-12]));
    var svg = svgEl("svg", { viewBox: "0 0 " + W + " " + H, width: W, height: H, "data-rows": String(rows.length),
                             "data-chart": key }, el);
    rows.forEach(function (r, i) {
      var y = T + i * rowH, v = value(r);
      text(svg, L - 6, y + 15, label(r), { "text-anchor": "end" });
      var w = isNum(v) ? (W - L - 175) * v / max : 0;
      svgEl("rect", { x: L, y: y + 4, width: Math.max(w, 1), height: rowH - 8, fill: color, "data-value": String(v) }, svg);
      text(svg, L + w + 4, y + 15, caption(r), { fill: "#555" });
    });
  }

  function drawOperators(d) {
    var el = figure("fig-operators"), rows = d.operators;
    if (!rows.length) { note(el, "no data yet: " + d.notes.operators); return; }
    bars(el, "operators", rows, function (r) { return r.operator + " / " + r.model; },
         function (r) { return isNum(r.success_rate) ? r.success_rate : 0; },
         function (r) { return pct(r.success_rate) + "  " + r.archived + "/" + r.finished + " archived, " + r.failed + " failed"; },
         "#2ca02c");
    htmlEl("p", { "class": "caption" }, el, "success rate: archived / finished children of each operator and model (roots left out)");
  }

  function drawFailures(d) {
    var el = figure("fig-failures"), rows = d.failures;
    if (!rows.length) { note(el, d.notes.failures || "no failed children"); return; }
    bars(el, "failures", rows, function (r) { return r.stage + " \u00b7 " + r.kind; },
         function (r) { return r.count; }, function (r) { return fmt(r.count); }, "#d62728");
  }

  // ------------------------------------------------------------------ polling

  function setStatus(s, error) {
    var el = document.getElementById("status");
    el.textContent = s;
    el.className = error ? "status error" : "status";
  }

  function draw(d) {
    var parts = [drawHeadline, drawProgress, drawHeatmap, drawLineage, drawOperators, drawFailures];
    parts.forEach(function (f) {
      try { f(d); } catch (e) { state.lastError = String(e); if (window.console) console.error(e); }
    });
    document.title = "openended: " + d.run.task + " (" + d.run.status + ")";
    document.getElementById("title").textContent = "openended: " + d.run.task + " \u2014 " + d.run.name;
    var age = isNum(d.totals.last_stats_at) ? (d.generated_at - d.totals.last_stats_at) : null;
    setStatus("run " + d.run.status + " \u00b7 " + d.run.archive + " archive, " + d.run.selection + " selection, seed " +
              d.run.seed + " \u00b7 last stats " + (age === null ? "none yet" : fmt(Math.max(age, 0)) + " s ago") +
              " \u00b7 updated " + new Date(d.generated_at * 1000).toLocaleTimeString() +
              " (every " + POLL_MS / 1000 + " s)", false);
    state.drawnAt = Date.now();
  }

  function poll() {
    fetch(DATA_URL, { cache: "no-store" }).then(function (resp) {
      return resp.json().then(function (d) {
        if (!resp.ok) throw new Error(d && d.error ? d.error : "HTTP " + resp.status);
        return d;
      });
    }).then(function (d) {
      state.data = d;
      state.polls += 1;
      draw(d);
    }).catch(function (e) {
      state.errors += 1;
      state.lastError = String(e && e.message ? e.message : e);
      setStatus("no data yet: " + state.lastError + " (retrying every " + POLL_MS / 1000 + " s)", true);
    }).then(function () { setTimeout(poll, POLL_MS); });
  }

  poll();
})();
