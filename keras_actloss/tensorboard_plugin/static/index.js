// Gradient Health dashboard for TensorBoard (keras-actloss).
//
// Loaded by TensorBoard's plugin iframe (`plugin_entry.html`), which imports
// this module and calls `render()`. Plain JavaScript, no build step, nothing
// fetched from outside the TensorBoard server. Data comes from two routes of
// the plugin, relative to this module: `runs` and `health?run=...`.

const VIRIDIS = [
  [68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142],
  [31, 158, 137], [53, 183, 121], [109, 205, 89], [180, 222, 44], [253, 231, 37],
];
const HEAT = [
  [255, 255, 229], [255, 247, 188], [254, 227, 145], [254, 196, 79],
  [254, 153, 41], [236, 112, 20], [204, 76, 2], [153, 52, 4], [102, 37, 6],
];
const NON_FINITE_COLOR = '#ff00c8';
const MISSING_COLOR = '#e8e8e8';
const ZERO_COLOR = '#000000';  // an exactly-zero gradient norm (log scale)
const MAX_COLUMNS = 500;

const state = {payload: null, token: 0};

export async function render() {
  const link = el('link', {rel: 'stylesheet', href: './style.css'});
  document.head.appendChild(link);
  const select = el('select', {id: 'gh-run', 'aria-label': 'Run'});
  const status = el('span', {id: 'gh-status'}, 'Loading runs…');
  const toolbar = el('div', {id: 'gh-toolbar'}, [
    el('label', {for: 'gh-run'}, 'Run'), select, status, keys(),
  ]);
  const view = el('div', {id: 'gh-view'});
  document.body.append(toolbar, view, el('div', {id: 'gh-tooltip', hidden: ''}));

  let listing;
  try {
    listing = await getJSON('./runs');
  } catch (err) {
    status.textContent = `Could not list runs: ${err.message}`;
    return;
  }
  const runs = listing.runs;
  if (runs.length === 0) {
    status.textContent = '';
    view.replaceChildren(empty('No runs in this log directory yet.'));
    return;
  }
  for (const {run, has_data: hasData} of runs) {
    select.appendChild(el('option', {value: run}, hasData ? run : `${run} (no data)`));
  }
  const first = runs.find((r) => r.has_data) || runs[0];
  select.value = first.run;
  select.addEventListener('change', () => showRun(select.value));
  let resizeTimer = null;
  window.addEventListener('resize', () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => state.payload && draw(state.payload), 150);
  });
  await showRun(first.run);
}

async function showRun(run) {
  const token = ++state.token;
  const status = document.getElementById('gh-status');
  status.textContent = 'Loading…';
  const columns = Math.max(20, Math.min(MAX_COLUMNS, Math.floor(plotWidth() / 2)));
  const query = new URLSearchParams({run, columns: String(columns)});
  let payload;
  try {
    payload = await getJSON(`./health?${query}`);
  } catch (err) {
    if (token === state.token) status.textContent = `Error: ${err.message}`;
    return;
  }
  if (token !== state.token) return;  // a later selection won
  state.payload = payload;
  draw(payload);
}

function draw(payload) {
  const status = document.getElementById('gh-status');
  const view = document.getElementById('gh-view');
  document.body.dataset.run = payload.run;
  tooltip().hidden = true;
  if (!payload.has_data) {
    status.textContent = '';
    view.replaceChildren(empty(payload.message));
    return;
  }
  const cols = payload.columns;
  const perColumn = cols.length ? payload.recorded_steps / cols.length : 0;
  status.textContent = `${payload.layers.length} layers · ${payload.recorded_steps} ` +
      `recorded steps` + (perColumn > 1 ?
        ` · ${cols.length} columns, each the largest of ~${perColumn.toFixed(1)} steps` : '');
  const parts = payload.heatmaps.map((h) => heatmapSection(h, cols, payload.findings));
  parts.push(findingsSection(payload.findings, payload.message));
  view.replaceChildren(...parts);
}

// ---------------------------------------------------------------- heatmaps

function heatmapSection(heatmap, columns, findings) {
  const section = el('section', {class: 'gh-heatmap', 'data-section': heatmap.section});
  const scale = makeScale(heatmap);
  section.appendChild(el('h2', {}, [
    heatmap.title + (heatmap.log_scale ? ' (log scale)' : ''), legend(scale),
  ]));
  if (heatmap.layers.length === 0) {
    section.appendChild(empty(`No layer of this run records ${heatmap.section}.`));
    return section;
  }
  const rowH = heatmap.layers.length > 30 ? 12 : 18;
  const cellW = Math.max(1, Math.min(28, Math.floor(plotWidth() / columns.length)));
  const labels = el('div', {class: 'gh-labels'}, heatmap.layers.map((name) =>
    el('div', {class: 'gh-row-label', title: name, style: `height:${rowH}px`}, name)));
  labels.appendChild(el('div', {class: 'gh-axis-title'}, 'step'));
  const canvas = el('canvas', {
    class: 'gh-canvas', width: cellW * columns.length, height: rowH * heatmap.layers.length,
    'data-rows': heatmap.layers.length, 'data-columns': columns.length,
  });
  paint(canvas, heatmap, scale, cellW, rowH);
  const plot = el('div', {class: 'gh-plot'}, [canvas]);
  const begins = new Map();  // "row:col" -> modes of the findings starting there
  for (const f of findings) {
    if (f.section !== heatmap.section || f.step === null) continue;
    // A layer's finding marks its cell; a model-wide one (layer null) the column.
    const row = f.layer === null ? -1 : heatmap.layers.indexOf(f.layer);
    if (f.layer !== null && row < 0) continue;
    const col = columnOf(columns, f.step);
    const rows = row < 0 ? heatmap.layers.map((_, r) => r) : [row];
    for (const r of rows) begins.set(`${r}:${col}`, [...(begins.get(`${r}:${col}`) || []), f.mode]);
    const top = row < 0 ? 0 : row * rowH;
    const height = row < 0 ? heatmap.layers.length * rowH : rowH;
    plot.appendChild(el('div', {
      class: row < 0 ? 'gh-marker gh-marker-model' : 'gh-marker',
      'data-layer': f.layer === null ? '' : f.layer, 'data-step': f.step,
      style: `left:${col * cellW}px;top:${top}px;` +
          `width:${Math.max(cellW, 6)}px;height:${height}px`,
    }));
  }
  plot.appendChild(axis(columns, cellW));
  canvas.addEventListener('mousemove',
      (e) => hover(e, canvas, heatmap, columns, cellW, rowH, begins));
  canvas.addEventListener('mouseleave', () => { tooltip().hidden = true; });
  section.appendChild(el('div', {class: 'gh-grid'}, [labels, plot]));
  return section;
}

function paint(canvas, heatmap, scale, cellW, rowH) {
  const ctx = canvas.getContext('2d');
  heatmap.values.forEach((row, r) => {
    row.forEach((value, c) => {
      ctx.fillStyle = scale.color(value);
      ctx.fillRect(c * cellW, r * rowH, cellW, rowH);
    });
  });
}

function makeScale(heatmap) {
  if (!heatmap.log_scale) {
    return {log: false, lo: 0, hi: 1, palette: HEAT, color: (v) => colorOf(v, 0, 1, HEAT, false)};
  }
  let lo = Infinity, hi = -Infinity;
  for (const row of heatmap.values) {
    for (const v of row) {
      if (typeof v === 'number' && v > 0) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    }
  }
  if (!(lo < Infinity)) { lo = 1e-3; hi = 1; }
  if (lo === hi) { lo /= 10; hi *= 10; }
  return {log: true, lo, hi, palette: VIRIDIS, color: (v) => colorOf(v, lo, hi, VIRIDIS, true)};
}

function colorOf(value, lo, hi, palette, log) {
  if (value === null || value === undefined) return MISSING_COLOR;
  if (typeof value !== 'number') return NON_FINITE_COLOR;  // "NaN", "Infinity"
  let t;
  if (log) {
    if (value <= 0) return ZERO_COLOR;
    t = (Math.log10(value) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo));
  } else {
    t = (value - lo) / (hi - lo);
  }
  t = Math.min(1, Math.max(0, t)) * (palette.length - 1);
  const i = Math.min(palette.length - 2, Math.floor(t));
  const f = t - i;
  const rgb = palette[i].map((a, k) => Math.round(a + f * (palette[i + 1][k] - a)));
  return `rgb(${rgb.join(',')})`;
}

function legend(scale) {
  const bar = el('canvas', {class: 'gh-legend-bar', width: 120, height: 10});
  const ctx = bar.getContext('2d');
  for (let x = 0; x < 120; x++) {
    const t = x / 119;
    const v = scale.log ? 10 ** (Math.log10(scale.lo) + t * Math.log10(scale.hi / scale.lo))
                        : scale.lo + t * (scale.hi - scale.lo);
    ctx.fillStyle = scale.color(v);
    ctx.fillRect(x, 0, 1, 10);
  }
  return el('span', {class: 'gh-legend'}, [fmt(scale.lo), bar, fmt(scale.hi)]);
}

function keys() {
  return el('span', {id: 'gh-keys', class: 'gh-legend'}, [
    swatch(ZERO_COLOR), 'zero gradient', swatch(NON_FINITE_COLOR), 'non-finite',
    swatch(MISSING_COLOR), 'not recorded',
    el('span', {class: 'gh-marker-key'}), 'finding begins',
  ]);
}

function swatch(color) {
  return el('span', {class: 'gh-swatch', style: `background:${color}`});
}

function axis(columns, cellW) {
  const ticks = el('div', {class: 'gh-axis', style: `width:${columns.length * cellW}px`});
  const n = Math.min(columns.length, Math.max(2, Math.floor(columns.length * cellW / 80)));
  for (let k = 0; k < n; k++) {
    const c = n === 1 ? 0 : Math.round(k * (columns.length - 1) / (n - 1));
    ticks.appendChild(el('span', {style: `left:${c * cellW}px`}, String(columns[c][0])));
  }
  return ticks;
}

function columnOf(columns, step) {
  let lo = 0, hi = columns.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (columns[mid][0] <= step) lo = mid; else hi = mid - 1;
  }
  return lo;
}

function hover(event, canvas, heatmap, columns, cellW, rowH, begins) {
  const box = canvas.getBoundingClientRect();
  const c = Math.floor((event.clientX - box.left) / cellW);
  const r = Math.floor((event.clientY - box.top) / rowH);
  const tip = tooltip();
  if (r < 0 || r >= heatmap.layers.length || c < 0 || c >= columns.length) {
    tip.hidden = true;
    return;
  }
  const [first, last] = columns[c];
  const steps = first === last ? `step ${first}` : `steps ${first}–${last}`;
  const value = heatmap.values[r][c];
  const shown = value === null ? 'not recorded' : fmt(value);
  const modes = begins.get(`${r}:${c}`);
  tip.textContent = `${heatmap.layers[r]} · ${steps} · ${heatmap.title.toLowerCase()}: ` +
      shown + (modes ? ` · ${modes.join(', ')} begins` : '');
  tip.dataset.layer = heatmap.layers[r];
  tip.style.left = `${event.clientX + 12}px`;
  tip.style.top = `${event.clientY + 12}px`;
  tip.hidden = false;
}

function tooltip() {
  return document.getElementById('gh-tooltip');
}

// ---------------------------------------------------------------- findings

// `note`: the payload's message of a run that recorded no training step.
function findingsSection(findings, note) {
  const section = el('section', {id: 'gh-findings-section'}, [el('h2', {}, 'Findings')]);
  if (note) section.appendChild(empty(note));
  if (findings.length === 0) {
    if (!note) {
      section.appendChild(empty('No findings: no failure mode was detected in this run.'));
    }
    return section;
  }
  const head = el('tr', {}, ['Mode', 'Layer', 'Step', 'Value', 'Fix'].map((h) => el('th', {}, h)));
  const rows = findings.map((f) => el('tr', {
    class: `gh-finding gh-${f.severity}`, title: f.message, 'data-mode': f.mode,
  }, [
    el('td', {class: 'gh-mode'}, f.mode),
    el('td', {class: 'gh-layer'}, f.layer === null ? '(model)' : f.layer),
    el('td', {class: 'gh-step'}, f.step === null ? 'before training' : String(f.step)),
    el('td', {class: 'gh-value'}, f.value === null ? '' : fmt(f.value)),
    el('td', {class: 'gh-fix'}, f.fix),
  ]));
  section.appendChild(el('table', {id: 'gh-findings'}, [
    el('thead', {}, head), el('tbody', {}, rows),
  ]));
  return section;
}

// ---------------------------------------------------------------- helpers

function fmt(value) {
  if (typeof value !== 'number') return String(value);
  if (value === 0) return '0';
  const a = Math.abs(value);
  return a >= 1e4 || a < 1e-3 ? value.toExponential(2) : String(Number(value.toPrecision(4)));
}

function plotWidth() {
  return Math.max(200, document.documentElement.clientWidth - 220);
}

function empty(message) {
  return el('p', {class: 'gh-empty'}, message);
}

async function getJSON(url) {
  const response = await fetch(url);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

function el(tag, attrs, children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  if (children === undefined || children === null) return node;
  for (const child of Array.isArray(children) ? children : [children]) {
    node.append(child);
  }
  return node;
}
