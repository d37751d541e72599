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

// Progressive Resolution's stage band under the strip: one segment per stage, shaded by the share of the
// image tokens the stage ran (full resolution lightest; each halving of the tokens one shade darker).
export const STAGE_COLORS = ["#c9d1d9", "#b392f0", "#a371f7", "#8957e5", "#6e40c9", "#553098"];

export const PAD = 8;
export const LINE_H = 16;
export const STRIP_H = 14;
export const STRIP_GAP = 4;
export const BAND_H = 11;
export const BAND_GAP = 2;
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
  const merged = num(run?.merged_runs);
  if (merged > 1) detail.push(`${merged} cache runs, one per stage`);
  else if (extra.runsInPrompt > 1) detail.push(`run ${extra.runsInPrompt} of this prompt`);
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
  const plan = stagePlan(run);
  if (!plan.length) return "";
  const parts = plan.map((p) => (isStage(p) ? `${stageScale(p)} ${p[1]}-${p[2] - 1}` : "?"));
  const ratio = num(st.token_ratio);
  const flops = num(st.flops_ratio);
  let line = `stages ${parts.join(", ")}`;
  if (ratio !== null) line += ` · with cache ${ratio.toFixed(2)}x fewer token-blocks`;
  if (flops !== null) line += ` (${flops.toFixed(2)}x FLOPs)`;
  return line;
}

function stagePlan(run) {
  const st = run?.stages && typeof run.stages === "object" ? run.stages : null;
  return Array.isArray(st?.plan) ? st.plan : [];
}

function isStage(p) {
  return Array.isArray(p) && p.length >= 3 && [p[0], p[1], p[2]].every((v) => num(v) !== null);
}

// The scale a stage ran at, from its plan entry [factor, start, end(, frames)]: "1/2", "1/2 frames", "full".
export function stageScale(p) {
  const frames = p.length > 3 ? p[3] : 1;
  const parts = [];
  if (p[0] > 1) parts.push(`1/${p[0]}`);
  if (frames > 1) parts.push(`1/${frames} frames`);
  return parts.length ? parts.join(" ") : "full";
}

// A stage's shade: one step darker per halving of the image tokens (factor^2 x frames).
export function stageColor(p) {
  const frames = p.length > 3 && num(p[3]) !== null ? p[3] : 1;
  const halvings = Math.round(Math.log2(Math.max(1, p[0] * p[0] * frames)));
  return STAGE_COLORS[Math.min(STAGE_COLORS.length - 1, Math.max(0, halvings))];
}

// The stage band: which model calls ran in which Progressive Resolution stage, as segments of consecutive
// calls [{first, last, label, color}] (call indices into the timeline). From the server's resolution_steps
// (per call, the step of the resolution schedule; -1 for the anchor call, which runs at full resolution)
// against the stage plan. The cache's own call_steps cannot place the calls: a cache inside a stage counts
// that stage's steps from 0. Empty when the run has no stages or the steps do not match its calls.
export function stageBand(run) {
  const plan = stagePlan(run).filter(isStage);
  const steps = Array.isArray(run?.resolution_steps) ? run.resolution_steps : [];
  const calls = typeof run?.timeline === "string" ? run.timeline.length : 0;
  if (!plan.length || !calls || steps.length !== calls) return [];
  const stageOf = (step) => {  // index into the plan; -1 the anchor call; -2 no stage (not expected)
    if (step === -1) return -1;
    const index = num(step) === null ? -1 : plan.findIndex((p) => p[1] <= step && step < p[2]);
    return index >= 0 ? index : -2;
  };
  const segments = [];
  steps.forEach((step, i) => {
    const stage = stageOf(step);
    const last = segments[segments.length - 1];
    if (last && last.stage === stage) {
      last.last = i;
      return;
    }
    const entry = stage >= 0 ? plan[stage] : null;
    segments.push({
      stage, first: i, last: i,
      label: entry ? stageScale(entry) : stage === -1 ? "anchor" : "?",
      scale: entry ? stageScale(entry) : stage === -1 ? "full" : "?",
      color: entry ? stageColor(entry) : stage === -1 ? STAGE_COLORS[0] : NEUTRAL_COLOR,
    });
  });
  return segments;
}

// The band's legend: each scale once, in the plan's order (the anchor call is at full resolution).
export function stageLegend(segments) {
  const seen = new Map();
  const order = [...segments].sort((a, b) => (a.stage < 0 ? Infinity : a.stage) - (b.stage < 0 ? Infinity : b.stage));
  for (const s of order) if (!seen.has(s.scale)) seen.set(s.scale, s.scale === "?" ? NEUTRAL_COLOR : s.color);
  return [...seen].map(([scale, color]) => ({ label: scale === "full" || scale === "?" ? scale : `${scale} res`, color }));
}

const SUMMED = ["calls", "computed_calls", "forecast_calls", "evaluations", "computed_evaluations", "partial_calls",
  "probes", "accepted", "rejected", "rollbacks", "probe_blocks", "guarded", "learned_forecasts", "budget", "fallbacks",
  "resets"];

// A Forecast Cache placed after Progressive Resolution on the model path runs once per stage, and each stage's
// run arrives on its own. `run` continues `previous` when both carry resolution_steps and its first step comes
// after the last of `previous` (same prompt and sampler: the caller checks): then one run over all the
// stages so far (strip, counts and band), else null. Wall speed-up: each part's estimate weighted by its
// sampling time; a part that computed every call counts as 1.0, any other part without one drops it.
export function mergeStageRuns(previous, run) {
  const a = Array.isArray(previous?.resolution_steps) ? previous.resolution_steps : [];
  const b = Array.isArray(run?.resolution_steps) ? run.resolution_steps : [];
  if (!a.length || !b.length || typeof previous.timeline !== "string" || typeof run.timeline !== "string"
      || a.length !== previous.timeline.length || b.length !== run.timeline.length || !(b[0] > a[a.length - 1])) {
    return null;
  }
  const merged = { ...run, timeline: previous.timeline + run.timeline, resolution_steps: [...a, ...b],
                   merged_runs: (num(previous.merged_runs) ?? 1) + 1 };
  for (const key of SUMMED) {
    if (num(previous[key]) !== null || num(run[key]) !== null) merged[key] = (num(previous[key]) ?? 0) + (num(run[key]) ?? 0);
  }
  merged.call_steps = [...(previous.call_steps ?? []), ...(run.call_steps ?? [])];
  merged.evaluation_speedup = merged.computed_evaluations ? merged.evaluations / merged.computed_evaluations : undefined;
  const pb = previous.branch_timelines, rb = run.branch_timelines;
  const keys = pb && rb && typeof pb === "object" && typeof rb === "object" ? Object.keys(rb) : [];
  merged.branch_timelines = keys.length && keys.every((k) => typeof pb[k] === "string" && typeof rb[k] === "string")
    ? Object.fromEntries(keys.map((k) => [k, pb[k] + rb[k]])) : undefined;
  merged.backtest_log = [...(previous.backtest_log ?? []), ...(run.backtest_log ?? [])];
  merged.peak_cache_bytes = Math.max(num(previous.peak_cache_bytes) ?? 0, num(run.peak_cache_bytes) ?? 0);
  merged.interrupted = Boolean(previous.interrupted || run.interrupted);
  const plan = stagePlan(run).filter(isStage);
  merged.total_steps = plan.length ? plan[plan.length - 1][2] : (num(previous.total_steps) ?? 0) + (num(run.total_steps) ?? 0);
  const wall = (num(previous.wall_seconds) ?? 0) + (num(run.wall_seconds) ?? 0);
  merged.wall_seconds = wall;
  const part = (r) => num(r.wall_speedup_estimate) ?? (num(r.calls) && r.computed_calls === r.calls ? 1.0 : null);
  const ea = part(previous), eb = part(run);
  merged.wall_speedup_estimate = ea !== null && eb !== null && wall > 0
    ? (ea * (num(previous.wall_seconds) ?? 0) + eb * (num(run.wall_seconds) ?? 0)) / wall : null;
  merged.token_work = {};  // per-stage ratios do not add up; the stage line has the joint work
  return merged;
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
  // The stage band, on the strips' cell grid (only when it has one segment per stage for every call shown).
  const last = rows[rows.length - 1];
  const calls = typeof run?.timeline === "string" ? run.timeline.length : 0;
  const segments = last?.kind === "strip" && list.every((s) => s.timeline.length === calls) ? stageBand(run) : [];
  if (segments.length) {
    y += BAND_GAP;
    const cw = last.w / last.cells.length;
    rows.push({ kind: "band", label: labelled ? "res" : "", labelX: PAD, x: last.x, y, w: last.w, h: BAND_H,
                segments: segments.map((g) => ({ ...g, x: last.x + g.first * cw, w: (g.last - g.first + 1) * cw })) });
    y += BAND_H;
  }
  const items = legend(run);
  if (items.length) {
    y += STRIP_GAP;
    rows.push({ kind: "legend", items, x: PAD, y: y + LINE_H - 4 });
    y += LINE_H;
  }
  if (segments.length) {
    rows.push({ kind: "legend", title: "resolution", items: stageLegend(segments), x: PAD, y: y + LINE_H - 4 });
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
  const drawn = { strips: [], band: null };
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
    } else if (row.kind === "band") {
      if (row.label) {
        ctx.fillStyle = text;
        ctx.fillText(row.label, row.labelX, row.y + row.h - 2, LABEL_W - 4);
      }
      const m = ctx.getTransform();
      const px = (lx, ly) => ({ x: m.a * lx + m.c * ly + m.e, y: m.b * lx + m.d * ly + m.f });
      const font = ctx.font;
      ctx.font = theme.bandFont ?? "9px sans-serif";
      ctx.textAlign = "center";
      for (const g of row.segments) {
        ctx.fillStyle = g.color;
        ctx.fillRect(g.x, row.y, Math.max(g.w - 1, 0.5), row.h); // a 1-unit gap where a stage ends
        if (ctx.measureText(g.label).width + 4 <= g.w - 1) {
          ctx.fillStyle = g.color === STAGE_COLORS[0] ? "#1f2328" : "#ffffff";
          ctx.fillText(g.label, g.x + (g.w - 1) / 2, row.y + row.h - 2);
        }
      }
      ctx.font = font;
      ctx.textAlign = "left";
      drawn.band = {
        segments: row.segments.map((g) => {
          const inset = Math.min(2, (g.w - 1) / 4); // clear of the edges' antialiasing, and of the centred label
          return {
            label: g.label, first: g.first, last: g.last, color: g.color,
            // canvas pixels near the segment's left and right ends, on the band's top rows (above any label)
            left: px(g.x + inset, row.y + 1.5), right: px(g.x + g.w - 1 - inset, row.y + 1.5),
          };
        }),
      };
    } else if (row.kind === "legend") {
      let lx = row.x;
      if (row.title) {
        ctx.fillStyle = text;
        ctx.fillText(row.title, lx, row.y);
        lx += ctx.measureText(row.title).width + 8;
      }
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
