// jnrelay donor page: bar charts drawn as inline SVG by the page itself.
// Nothing is loaded from elsewhere and nothing is styled inline (the
// page's Content-Security-Policy forbids both): colours and text sizes
// come from app.css classes, so the dark theme applies. Each chart is
// drawn at its container's width in CSS pixels, so text stays readable
// on a 360 px phone, and comes with a title, a description and a table
// (for screen readers, and anyone who wants the figures).
'use strict';
window.jnrelayCharts = (function () {
  const NS = 'http://www.w3.org/2000/svg';
  let serial = 0; // ids for aria-labelledby

  function svgEl(tag, attrs, text) {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // niceScale picks a top value of at least max and a step between
  // gridlines of 1, 2, 2.5 or 5 times a power of ten (whole numbers only
  // for counts), about three gridlines in all.
  function niceScale(max, whole) {
    if (!(max > 0)) return { top: whole ? 4 : 1, step: whole ? 1 : 0.25 };
    const rough = max / 3;
    const pow = Math.pow(10, Math.floor(Math.log10(rough)));
    let step = [1, 2, 2.5, 5, 10].map((m) => m * pow).find((s) => s >= rough);
    if (whole) step = Math.max(1, Math.ceil(step));
    return { top: Math.ceil(max / step - 1e-9) * step, step };
  }

  const FONT_PX = 11; // .chart-label in app.css
  const textWidth = (s) => s.length * FONT_PX * 0.6; // about, for system-ui

  // axis is the value axis for values up to max: its gridline values
  // and the room their labels need on the left.
  function axis(max, format, whole) {
    const scale = niceScale(max, whole);
    const ticks = [];
    for (let v = 0; v <= scale.top + scale.step / 2; v += scale.step) ticks.push(v);
    return { scale, ticks, left: Math.max(...ticks.map((v) => textWidth(format(v)))) + 8 };
  }

  // bars draws one panel of bars. o: {width, height, title, desc,
  // bars: [{key, label, value (null = no figure), tip, current}],
  // every: label every n-th bar counting back from the last,
  // format(v): an axis value, whole: counts, cls: extra class,
  // left: at least this much room for the axis labels (panels drawn
  // one above the other line their bars up with the same left)}.
  function bars(o) {
    const id = 'chart' + (++serial);
    const fontPx = FONT_PX;
    const { scale, ticks, left: need } = axis(Math.max(0, ...o.bars.map((b) => b.value || 0)), o.format, o.whole);
    const left = Math.max(need, o.left || 0);
    const top = 6, bottom = fontPx + 10, right = 4;
    const w = Math.max(120, Math.floor(o.width)), h = o.height;
    const plotW = w - left - right, plotH = h - top - bottom;
    const slot = plotW / o.bars.length;
    const barW = Math.max(1, slot * 0.72);
    const y = (v) => top + plotH - (v / scale.top) * plotH;

    const svg = svgEl('svg', { class: 'chart ' + (o.cls || ''), width: w, height: h, viewBox: `0 0 ${w} ${h}`,
      role: 'img', 'aria-labelledby': id + '-t ' + id + '-d' });
    svg.append(svgEl('title', { id: id + '-t' }, o.title), svgEl('desc', { id: id + '-d' }, o.desc));
    const grid = svgEl('g', { class: 'chart-grid', 'aria-hidden': 'true' });
    for (const v of ticks) {
      const gy = Math.round(y(v)) + 0.5;
      grid.append(svgEl('line', { x1: left, x2: w - right, y1: gy, y2: gy }));
      grid.append(svgEl('text', { x: left - 6, y: gy + fontPx * 0.35, 'text-anchor': 'end', class: 'chart-label' }, o.format(v)));
    }
    svg.append(grid);
    const g = svgEl('g', { class: 'chart-bars' });
    o.bars.forEach((b, i) => {
      if (!(b.value > 0)) return;
      // A bar is at least 2 px high: a small figure stays visible.
      const x = left + i * slot + (slot - barW) / 2;
      const bh = Math.max(2, plotH - (y(b.value) - top));
      const r = svgEl('rect', { x: x.toFixed(1), y: (top + plotH - bh).toFixed(1), width: barW.toFixed(1), height: bh.toFixed(1),
        class: 'chart-bar' + (b.current ? ' current' : ''), 'data-key': b.key, 'data-value': b.value });
      r.append(svgEl('title', {}, b.tip));
      g.append(r);
    });
    svg.append(g, labels(o.bars, o.every, left, slot, plotW, h - 3));
    return svg;
  }

  // labels puts every o.every-th bar's label under it, counting back
  // from the last (the current period, always labelled), leaving out any
  // that would touch the next one kept.
  function labels(list, every, left, slot, plotW, baseline) {
    const g = svgEl('g', { class: 'chart-x', 'aria-hidden': 'true' });
    let limit = left + plotW; // labels must end left of this
    for (let i = list.length - 1; i >= 0; i--) {
      const b = list[i], wdt = textWidth(b.label || '');
      if (!b.label || (list.length - 1 - i) % every !== 0) continue;
      let cx = left + (i + 0.5) * slot;
      cx = Math.min(cx, limit - wdt / 2); // the last label ends at the plot's edge
      if (cx - wdt / 2 < 0 || (i < list.length - 1 && cx + wdt / 2 > limit)) continue;
      g.append(svgEl('text', { x: cx.toFixed(1), y: baseline, 'text-anchor': 'middle', class: 'chart-label' + (b.current ? ' current' : '') }, b.label));
      limit = cx - wdt / 2 - 6;
    }
    return g;
  }

  // table lists the figures: head is the column titles, rows arrays of
  // cells.
  function table(caption, head, rows) {
    const t = document.createElement('table');
    t.className = 'chart-table';
    const c = document.createElement('caption');
    c.textContent = caption;
    const thead = document.createElement('thead');
    const hr = document.createElement('tr');
    for (const h of head) {
      const th = document.createElement('th');
      th.scope = 'col';
      th.textContent = h;
      hr.append(th);
    }
    thead.append(hr);
    const tbody = document.createElement('tbody');
    for (const r of rows) {
      const tr = document.createElement('tr');
      r.forEach((cell, i) => {
        const td = document.createElement(i === 0 ? 'th' : 'td');
        if (i === 0) td.scope = 'row';
        td.textContent = cell;
        tr.append(td);
      });
      tbody.append(tr);
    }
    t.append(c, thead, tbody);
    return t;
  }

  // every is how many bars apart the labels must be for labels about
  // minPx wide to fit, given the width of a bar's slot.
  function every(width, n, minPx) {
    return Math.max(1, Math.ceil(minPx / Math.max(1, (width - 60) / n)));
  }

  return { bars, table, every, axis, niceScale };
})();
