// The layout check `cargo xtask html-check` runs in the report page (a copy of it): it measures
// the page as the browser lays it out, fonts included, and logs one line per fault
// ("LAYOUT-FAIL ...") and a last "LAYOUT-OK <checks>" or "LAYOUT-FAILED <faults>".
//   - charts: no text overlaps the plotted data (the bounding box of every polyline and
//     polygon), and bars fill their bands (no empty band above or below them);
//   - flamegraphs: each frame is sized to its document, and the document to its frames.
(function () {
  // The page as parsed, before the checks lay it out again and again.
  var parsed = performance.now();
  var faults = [], checks = 0;
  // Every process's view of a --follow page is measured: shown (and left shown: this is a
  // copy of the page, and a flamegraph hidden again while it loads lays itself out at zero
  // width).
  var hidden = Array.prototype.filter.call(document.querySelectorAll('div.view'), function (v) { return v.hidden; });
  hidden.forEach(function (v) { v.hidden = false; });
  function fail(what) { faults.push(what); console.log('LAYOUT-FAIL ' + what); }
  function svgOf(url) {
    var data = url.slice(url.indexOf(',') + 1);
    return new DOMParser().parseFromString(atob(data), 'image/svg+xml').documentElement;
  }
  // Lays an SVG document out in the page (off to the side), so that getBBox measures it.
  function mount(svg) {
    var holder = document.createElement('div');
    holder.style.cssText = 'position:absolute;left:-20000px;top:0';
    holder.appendChild(document.importNode(svg, true));
    document.body.appendChild(holder);
    return holder;
  }
  function overlap(a, b) {
    return a.x < b.x + b.width && b.x < a.x + a.width && a.y < b.y + b.height && b.y < a.y + a.height;
  }
  document.querySelectorAll('img.chart').forEach(function (img) {
    var holder = mount(svgOf(img.src)), name = img.id || img.alt;
    var data = null;
    holder.querySelectorAll('polyline, polygon').forEach(function (el) {
      if ((el.getAttribute('points') || '').trim().split(/\s+/).length <= 2) return;
      var b = el.getBBox();
      if (b.height < 1) return;
      data = data ? {
        x: Math.min(data.x, b.x), y: Math.min(data.y, b.y),
        width: Math.max(data.x + data.width, b.x + b.width) - Math.min(data.x, b.x),
        height: Math.max(data.y + data.height, b.y + b.height) - Math.min(data.y, b.y)
      } : { x: b.x, y: b.y, width: b.width, height: b.height };
    });
    if (data) {
      checks++;
      holder.querySelectorAll('text').forEach(function (t) {
        var b = t.getBBox();
        if (b.width > 0 && overlap(b, data)) {
          fail(name + ': text "' + t.textContent.trim() + '" lies over the plotted data');
        }
      });
    }
    // Bars: the filled rects within the plot, whose extent is that of the vertical mesh
    // lines; one band per row of bars (their distinct tops).
    var lines = Array.prototype.map.call(holder.querySelectorAll('line'), function (l) { return l.getBBox(); });
    var mesh = lines.filter(function (l) { return l.width < 1 && l.height > 20; });
    if (mesh.length > 0) {
      var top = Math.min.apply(null, mesh.map(function (l) { return l.y; }));
      var bottom = Math.max.apply(null, mesh.map(function (l) { return l.y + l.height; }));
      var left = Math.min.apply(null, mesh.map(function (l) { return l.x; }));
      var bars = [];
      holder.querySelectorAll('rect').forEach(function (r) {
        var f = r.getAttribute('fill'), b = r.getBBox();
        if (f && f !== 'none' && f.toUpperCase() !== '#FFFFFF' && b.height > 0 && b.height < bottom - top
            && b.x >= left - 1 && b.y >= top - 1 && b.y + b.height <= bottom + 1) bars.push(b);
      });
      var rows = {};
      bars.forEach(function (b) { rows[b.y.toFixed(1)] = true; });
      var n = Object.keys(rows).length;
      if (n >= 2) {
        checks++;
        var barTop = Math.min.apply(null, bars.map(function (b) { return b.y; }));
        var barBottom = Math.max.apply(null, bars.map(function (b) { return b.y + b.height; }));
        var band = (bottom - top) / n;
        if (barTop - top > 0.3 * band) fail(name + ': an empty band above the bars (' + (barTop - top).toFixed(0) + ' px)');
        if (bottom - barBottom > 0.3 * band) fail(name + ': an empty band below the bars (' + (bottom - barBottom).toFixed(0) + ' px)');
      }
    }
    holder.remove();
  });
  document.querySelectorAll('object.flame').forEach(function (obj) {
    checks++;
    var svg = svgOf(obj.data);
    var declared = parseFloat(svg.getAttribute('height'));
    var frame = obj.getBoundingClientRect().height;
    if (Math.abs(frame - declared) > 8) fail(obj.id + ': frame ' + frame.toFixed(0) + ' px for a ' + declared + ' px document');
    var holder = mount(svg), bottom = 0;
    holder.querySelectorAll('rect').forEach(function (r) {
      var b = r.getBBox();
      if (b.height < declared * 0.9) bottom = Math.max(bottom, b.y + b.height);
    });
    if (declared - bottom > 80) fail(obj.id + ': ' + (declared - bottom).toFixed(0) + ' px empty below the frames');
    holder.remove();
  });
  // The page never scrolls sideways (a wide table scrolls in its own box), at any width the
  // check is run with (1280 and 800 px).
  checks++;
  var page = document.documentElement;
  if (page.scrollWidth > page.clientWidth + 1) fail('page-width: ' + page.scrollWidth + ' px in a ' + page.clientWidth + ' px window');
  // A number never wraps in its cell: the cells of each table's first 300 rows (one style
  // lays out them all; measuring each of a 10,000-row table's 90,000 cells once spun Chromium
  // for minutes on a page that renders in seconds).
  document.querySelectorAll('tr').forEach(function (tr) {
    if (tr.sectionRowIndex >= 300) return;
    tr.querySelectorAll('td:not(.l)').forEach(checkWrap);
  });
  function checkWrap(td) {
    if (!td.textContent.trim()) return;
    checks++;
    var range = document.createRange();
    range.selectNodeContents(td);
    var lines = {};
    Array.prototype.forEach.call(range.getClientRects(), function (r) { if (r.height > 0) lines[r.top.toFixed(0)] = true; });
    if (Object.keys(lines).length > 1) fail('wrapped-number: "' + td.textContent + '"');
  }
  // A filter box shows only the rows holding what is typed, and every row again when cleared.
  document.querySelectorAll('input.filter').forEach(function (input) {
    var table = document.getElementById(input.getAttribute('data-table'));
    var rows = table ? table.tBodies[0].rows : [];
    if (!rows.length) return;
    checks++;
    var shown = function () { return Array.prototype.filter.call(rows, function (r) { return !r.hidden; }).length; };
    input.value = 'no-such-frame-anywhere';
    input.dispatchEvent(new Event('input'));
    if (shown() !== 0) fail('filter ' + input.getAttribute('data-table') + ': ' + shown() + ' rows left for nothing');
    var first = rows[0].cells[0].textContent.trim().split(/\s+/)[0];
    input.value = first;
    input.dispatchEvent(new Event('input'));
    if (shown() < 1 || rows[0].hidden) fail('filter ' + input.getAttribute('data-table') + ': "' + first + '" hides its own row');
    input.value = '';
    input.dispatchEvent(new Event('input'));
    if (shown() !== rows.length) fail('filter ' + input.getAttribute('data-table') + ': clearing shows ' + shown() + ' of ' + rows.length);
  });
  // How quick the page is with what it holds: loaded (and laid out by the checks above), the
  // largest table sorted by its first number column, and filtered.
  var biggest = null;
  document.querySelectorAll('table.sortable').forEach(function (t) {
    if (t.tBodies[0] && (!biggest || t.tBodies[0].rows.length > biggest.tBodies[0].rows.length)) biggest = t;
  });
  var timing = 'loaded in ' + parsed.toFixed(0) + ' ms';
  if (biggest) {
    var th = biggest.tHead.rows[0].cells[biggest.tHead.rows[0].cells.length - 1];
    var t0 = performance.now();
    th.click();
    var sorted = performance.now() - t0;
    th.click();
    var input = document.querySelector('input.filter[data-table="' + biggest.id + '"]');
    var filtered = 0;
    if (input) {
      t0 = performance.now();
      input.value = 'main';
      input.dispatchEvent(new Event('input'));
      input.value = '';
      input.dispatchEvent(new Event('input'));
      filtered = (performance.now() - t0) / 2;
    }
    timing += ', ' + biggest.tBodies[0].rows.length + ' rows: sorted in ' + sorted.toFixed(0) +
      ' ms, filtered in ' + filtered.toFixed(0) + ' ms';
  }
  console.log('TIMING ' + timing);
  console.log(faults.length ? 'LAYOUT-FAILED ' + faults.length : 'LAYOUT-OK ' + checks);
})();
