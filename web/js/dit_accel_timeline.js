// DiT Accel: turns one run's statistics (accel_core/stats.py RunStats.as_dict(), sent by
// nodes/diagnostics.py) into a small panel layout, and draws it on a 2D canvas.
// Pure functions with no ComfyUI imports, so node's test runner can check them
// (tests/browser/timeline.test.mjs). Every key of the run is optional.

export const CELL_COLORS = {
  C: "#4c8bf5", // computed: the full model ran
  F: "#2fbf71", // forecast: the model was skipped
  R: "#e5534b", // forecast rejected by verification: computed instead
  P: "#d4a72c", // partial: a subset of the image tokens computed, the rest forecast
};
export const NEUTRAL_COLOR = "#8b949e"; // any letter this version does not know
export const CELL_LABELS = { C: "computed", F: "forecast", R: "rejected", P: "partial" };

export const PAD = 8;
export const LINE_H = 16;
export const STRIP_H = 14;
export const STRIP_GAP = 4;
export const LABEL_W = 44; // room for a branch label left of its strip

export function cellColor(letter) {
  return CELL_COLORS[letter] ?? NEUTRAL_COLOR;
}

export function countLetters(timeline) {
  const counts = {};
  for (const ch of String(timeline ?? "")) counts[ch] = (counts[ch] ?? 0) + 1;
  return counts;
}

function num(x) {
  return typeof x === "number" && Number.isFinite(x) ? x : null;
}

export function formatBytes(n) {
  n = num(n);
  if (n === null) return null;
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return i === 0 ? `${n.toFixed(0)} B` : `${n.toFixed(1)} ${units[i]}`;
}

// One strip per CFG branch when the branches' timelines differ; otherwise one strip.
export function strips(run) {
  const branches = run?.branch_timelines;
  if (branches && typeof branches === "object") {
    const entries = Object.entries(branches).filter(([, t]) => typeof t === "string" && t.length);
    const distinct = new Set(entries.map(([, t]) => t));
    if (entries.length > 1 && distinct.size > 1) {
      return entries.map(([name, t]) => ({ label: String(name), timeline: t }));
    }
  }
  const timeline = typeof run?.timeline === "string" ? run.timeline : "";
  return timeline.length ? [{ label: "", timeline }] : [];
}

// The text lines: what ran, the measured speed-up in model evaluations, memory and time.
export function textLines(run, extra = {}) {
  const counts = countLetters(run?.timeline);
  const calls = num(run?.calls) ?? (run?.timeline ? String(run.timeline).length : null);
  const computed = num(run?.computed_calls) ?? ((counts.C ?? 0) + (counts.R ?? 0));
  const lines = [];
  const head = [];
  if (run?.family) head.push(String(run.family));
  if (calls !== null) head.push(`${computed}/${calls} calls computed`);
  const speedup = num(run?.evaluation_speedup);
  if (speedup !== null) head.push(`${speedup.toFixed(2)}x fewer model evals`);
  lines.push(head.length ? head.join(" · ") : "DiT Accel: no run data");
  const detail = [];
  const steps = num(run?.total_steps);
  if (steps !== null) detail.push(`${steps} steps`);
  const cache = formatBytes(run?.peak_cache_bytes);
  if (cache !== null) detail.push(`cache ${cache} peak`);
  const wall = num(run?.wall_seconds);
  if (wall !== null) detail.push(`${wall.toFixed(2)} s sampling`);
  // Measured in this run: every call at the median computed call's time, over the sampling time (an
  // estimate of the wall speed-up; the uncached run itself was not timed).
  const wallSpeedup = num(run?.wall_speedup_estimate);
  if (wallSpeedup !== null) detail.push(`~${wallSpeedup.toFixed(1)}x wall (est.)`);
  const probes = num(run?.probes);
  if (probes) {
    // Verification: how many probed forecasts passed, and what probing cost in full-call units.
    const accepted = num(run?.accepted) ?? probes - (num(run?.rejected) ?? counts.R ?? 0);
    const cost = num(run?.probe_cost_calls);
    detail.push(`verify ${accepted}/${probes} ok${cost !== null ? ` (cost ${cost.toFixed(2)} calls)` : ""}`);
  } else {
    const rejected = num(run?.rejected) ?? counts.R ?? 0;
    if (rejected) detail.push(`${rejected} rejected`);
  }
  if (run?.interrupted) detail.push("interrupted");
  if (extra.runsInPrompt > 1) detail.push(`run ${extra.runsInPrompt} of this prompt`);
  if (detail.length) lines.push(detail.join(" · "));
  const policy = policyLine(run, steps);
  if (policy) lines.push(policy);
  const tokens = tokenLine(run);
  if (tokens) lines.push(tokens);
  const stages = stageLine(run);
  if (stages) lines.push(stages);
  return lines;
}

// Progressive Resolution on the same model: the stage plan (scale and steps) and the joint work of
// stages and cache in token-blocks and FLOPs against the uncached full-resolution run.
export function stageLine(run) {
  const st = run?.stages && typeof run.stages === "object" ? run.stages : null;
  const plan = Array.isArray(st?.plan) ? st.plan : [];
  if (!plan.length) return "";
  const scale = (p) => {
    const frames = p.length > 3 ? p[3] : 1;
    const parts = [];
    if (p[0] > 1) parts.push(`1/${p[0]}`);
    if (frames > 1) parts.push(`1/${frames} frames`);
    return parts.length ? parts.join(" ") : "full";
  };
  const parts = plan.map((p) => (Array.isArray(p) && p.length >= 3 ? `${scale(p)} ${p[1]}-${p[2] - 1}` : "?"));
  const ratio = num(st.token_ratio);
  const flops = num(st.flops_ratio);
  let line = `stages ${parts.join(", ")}`;
  if (ratio !== null) line += ` · with cache ${ratio.toFixed(2)}x fewer token-blocks`;
  if (flops !== null) line += ` (${flops.toFixed(2)}x FLOPs)`;
  return line;
}

// Token methods: partial steps and the work in token-blocks (tokens through each block) and FLOPs
// against the uncached run, what was measured on the model, or why the method was switched off.
export function tokenLine(run) {
  const method = typeof run?.token_method === "string" ? run.token_method : "";
  if (!method) return "";
  if (run?.token_note) return `tokens ${method}: off (${String(run.token_note).slice(0, 60)})`;
  const work = run?.token_work && typeof run.token_work === "object" ? run.token_work : {};
  const ratio = num(work.token_ratio);
  const flops = num(work.flops_ratio);
  const parts = [`tokens ${method}: ${num(run?.partial_calls) ?? 0} partial steps`];
  if (ratio !== null) parts.push(`${ratio.toFixed(2)}x fewer token-blocks${flops !== null ? ` (${flops.toFixed(2)}x FLOPs)` : ""}`);
  const trust = num(run?.token_trust);
  if (trust !== null) parts.push(`trust ${trust.toFixed(2)}`);
  const gain = num(run?.token_gain);
  if (gain !== null) parts.push(`gain ${gain.toFixed(2)}`);
  return parts.join(" · ");
}

// What the preset did: the output cache's budget, and the online backtest (how far the blend the
// run used, and plain output reuse, were off at the full steps).
function policyLine(run, steps) {
  const parts = [];
  const tag = typeof run?.tag === "string" ? run.tag : "";
  const budget = num(run?.budget);
  if (tag.startsWith("output-")) {
    parts.push(budget && steps ? `output cache: budget ${budget} of ${steps} steps` : "output cache");
  }
  if (typeof run?.schedule_note === "string" && run.schedule_note) parts.push(run.schedule_note);
  const log = Array.isArray(run?.backtest_log) ? run.backtest_log.filter((b) => Array.isArray(b) && num(b[1]) !== null) : [];
  if (log.length) {
    const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const blend = mean(log.map((b) => num(b[1])));
    const reuse = log.map((b) => num(b[2])).filter((v) => v !== null);
    parts.push(reuse.length
      ? `backtest error ${blend.toFixed(3)} vs output reuse ${mean(reuse).toFixed(3)}`
      : `backtest error ${blend.toFixed(3)}`);
  }
  return parts.join(" · ");
}

// The legend: every letter that occurs, known ones named, unknown ones shown as themselves.
// Letters this file does not know take the server's own short label (RunStats' timeline_legend).
export function legend(run) {
  const seen = new Set();
  for (const s of strips(run)) for (const ch of s.timeline) seen.add(ch);
  const serverLabels = run?.timeline_legend && typeof run.timeline_legend === "object" ? run.timeline_legend : {};
  const label = (c) => CELL_LABELS[c] ?? (typeof serverLabels[c] === "string" ? serverLabels[c].split(" (")[0].slice(0, 24) : c);
  const order = ["C", "F", "P", "R", ...[...seen].filter((c) => !(c in CELL_COLORS)).sort()];
  return order.filter((c) => seen.has(c)).map((c) => ({ letter: c, label: label(c), color: cellColor(c) }));
}

// Layout in node-local units: rows of text, strips of cells and a legend, `width` wide.
export function buildPanel(run, width, extra = {}) {
  const rows = [];
  let y = PAD;
  for (const text of textLines(run, extra)) {
    rows.push({ kind: "text", text, x: PAD, y: y + LINE_H - 4 });
    y += LINE_H;
  }
  const list = strips(run);
  const labelled = list.length > 1;
  for (const s of list) {
    y += STRIP_GAP;
    const x0 = PAD + (labelled ? LABEL_W : 0);
    const w = Math.max(10, width - x0 - PAD);
    const n = s.timeline.length;
    const cw = w / n;
    const cells = [];
    for (let i = 0; i < n; i++) {
      cells.push({ letter: s.timeline[i], color: cellColor(s.timeline[i]), x: x0 + i * cw, w: cw });
    }
    rows.push({ kind: "strip", label: s.label, labelX: PAD, x: x0, y, w, h: STRIP_H, cells,
                counts: countLetters(s.timeline) });
    y += STRIP_H;
  }
  const items = legend(run);
  if (items.length) {
    y += STRIP_GAP;
    rows.push({ kind: "legend", items, x: PAD, y: y + LINE_H - 4 });
    y += LINE_H;
  }
  return { height: y + PAD, width, rows };
}

// Draws a panel at (x, y) of the current canvas transform. Returns what was drawn, in canvas
// pixels, so a test can find the cells on screen.
export function drawPanel(ctx, panel, x, y, theme = {}) {
  const text = theme.text ?? "#d0d7de";
  const back = theme.background ?? "rgba(0,0,0,0.25)";
  ctx.save();
  ctx.translate(x, y);
  ctx.fillStyle = back;
  ctx.fillRect(2, 0, panel.width - 4, panel.height - 2);
  ctx.font = theme.font ?? "11px sans-serif";
  ctx.textAlign = "left";
  const drawn = { strips: [] };
  for (const row of panel.rows) {
    if (row.kind === "text") {
      ctx.fillStyle = text;
      ctx.fillText(row.text, row.x, row.y, panel.width - 2 * PAD);
    } else if (row.kind === "strip") {
      if (row.label) {
        ctx.fillStyle = text;
        ctx.fillText(row.label, row.labelX, row.y + row.h - 3, LABEL_W - 4);
      }
      const gap = row.cells.length && row.cells[0].w >= 4 ? 1 : 0;
      for (const c of row.cells) {
        ctx.fillStyle = c.color;
        ctx.fillRect(c.x, row.y, Math.max(c.w - gap, 0.5), row.h);
      }
      const m = ctx.getTransform();
      const px = (lx, ly) => ({ x: m.a * lx + m.c * ly + m.e, y: m.b * lx + m.d * ly + m.f });
      drawn.strips.push({
        label: row.label, counts: row.counts, cells: row.cells.length,
        // canvas-pixel centres of every cell, for pixel checks
        centres: row.cells.map((c) => px(c.x + c.w / 2, row.y + row.h / 2)),
        letters: row.cells.map((c) => c.letter).join(""),
      });
    } else if (row.kind === "legend") {
      let lx = row.x;
      for (const item of row.items) {
        ctx.fillStyle = item.color;
        ctx.fillRect(lx, row.y - 9, 9, 9);
        ctx.fillStyle = text;
        ctx.fillText(item.label, lx + 12, row.y);
        lx += 12 + ctx.measureText(item.label).width + 10;
      }
    }
  }
  ctx.restore();
  return drawn;
}

// Text lines of a DiTAccelCompare result (nodes/compare_node.py ui_payload).
export function compareLines(result) {
  if (!result) return [];
  const db = (v, identical) => (identical ? "identical (inf dB)" : num(v) === null ? "n/a" : `${v.toFixed(2)} dB`);
  const ssim = num(result.ssim);
  const lines = [`PSNR ${db(result.psnr_db, result.identical)} · SSIM ${ssim === null ? "n/a" : ssim.toFixed(4)}`];
  if (result.source === "image" && (num(result.latent_psnr_db) !== null || result.latent_identical)) {
    lines.push(`latent PSNR ${db(result.latent_psnr_db, result.latent_identical)}`);
  }
  if (result.shape) lines.push(`${result.source ?? ""} ${result.shape}`.trim());
  return lines;
}
