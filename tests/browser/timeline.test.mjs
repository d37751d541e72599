// Unit tests of the pure layout code of the web extension (node --test; run by
// tests/browser/test_timeline_js.py). No browser needed.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

// The browser loads web/js/*.js as ES modules; node would read a plain .js file as CommonJS
// (there is no package.json beside it), so import the source as an ES module explicitly.
const source = readFileSync(new URL("../../web/js/dit_accel_timeline.js", import.meta.url), "utf8");
const {
  BAND_GAP, BAND_H, buildPanel, cellColor, CELL_COLORS, compareLines, countLetters, formatBytes, legend, LINE_H,
  mergeStageRuns, NEUTRAL_COLOR, STAGE_COLORS, stageBand, stageColor, stageLine, stageScale, strips, textLines,
} = await import(`data:text/javascript;base64,${Buffer.from(source).toString("base64")}`);

const RUN = {
  family: "flux", tag: "foca-o1-i7-w3-f1", total_steps: 10, calls: 10, computed_calls: 5, forecast_calls: 5,
  evaluation_speedup: 2.0, peak_cache_bytes: 3 * 1024 * 1024, wall_seconds: 0.8123,
  timeline: "CCCFFFCFFC", call_steps: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], interrupted: false,
};

test("one cell per model call, coloured by letter", () => {
  const panel = buildPanel(RUN, 300);
  const stripRows = panel.rows.filter((r) => r.kind === "strip");
  assert.equal(stripRows.length, 1);
  const cells = stripRows[0].cells;
  assert.equal(cells.length, RUN.timeline.length);
  assert.deepEqual(cells.map((c) => c.letter).join(""), RUN.timeline);
  assert.deepEqual(stripRows[0].counts, { C: 5, F: 5 });
  for (const c of cells) assert.equal(c.color, CELL_COLORS[c.letter]);
  // cells tile the strip exactly, left to right
  const last = cells[cells.length - 1];
  assert.ok(Math.abs(last.x + last.w - (stripRows[0].x + stripRows[0].w)) < 1e-9);
  assert.ok(panel.height > 0 && panel.width === 300);
});

test("output cache runs say what the preset did: budget and backtest against output reuse", () => {
  const run = { ...RUN, tag: "output-backtest-1/5-w3-f1-budget", budget: 2, backtest_log: [[3, 0.01, 0.04], [6, 0.03, 0.06]] };
  const lines = textLines(run);
  assert.equal(lines[2], "output cache: budget 2 of 10 steps · backtest error 0.020 vs output reuse 0.050");
  assert.equal(textLines(RUN).length, 2);  // hidden-state runs without backtests: no third line
});

test("text names the measured evaluation ratio, cache peak and wall time", () => {
  const [head, detail] = textLines(RUN);
  assert.equal(head, "flux · 5/10 calls computed · 2.00x fewer model evals");
  assert.equal(detail, "10 steps · cache 3.0 MiB peak · 0.81 s sampling");
});

test("the run's own wall speed-up estimate is shown, and marked as an estimate", () => {
  const [, detail] = textLines({ ...RUN, wall_speedup_estimate: 4.26 });
  assert.equal(detail, "10 steps · cache 3.0 MiB peak · 0.81 s sampling · ~4.3x wall (est.)");
});

test("rejected and unknown letters: red, neutral grey, and named in the legend", () => {
  const run = { timeline: "CCFRFXC", rejected: 1 };
  assert.equal(cellColor("R"), CELL_COLORS.R);
  assert.equal(cellColor("X"), NEUTRAL_COLOR);
  assert.deepEqual(legend(run).map((i) => i.label), ["computed", "forecast", "rejected", "X"]);
  assert.match(textLines(run)[1], /1 rejected/);
});

test("missing keys never throw and still draw what is there", () => {
  assert.deepEqual(strips({}), []);
  assert.deepEqual(textLines({}), ["DiT Accel: no run data"]);
  assert.deepEqual(textLines(null), ["DiT Accel: no run data"]);
  const panel = buildPanel({ timeline: "CF" }, 200);
  assert.equal(panel.rows.filter((r) => r.kind === "strip")[0].cells.length, 2);
  assert.match(textLines({ timeline: "CFC" })[0], /2\/3 calls computed/); // counts from the timeline
  assert.equal(textLines({ timeline: "C", evaluation_speedup: null }).length, 1);
});

test("one strip per CFG branch only when the branches differ", () => {
  const same = { timeline: "CFC", branch_timelines: { cond: "CFC", uncond: "CFC" } };
  assert.deepEqual(strips(same).map((s) => s.label), [""]);
  const differ = { timeline: "CFC", branch_timelines: { cond: "CFC", uncond: "CRC" } };
  assert.deepEqual(strips(differ).map((s) => [s.label, s.timeline]), [["cond", "CFC"], ["uncond", "CRC"]]);
  assert.equal(buildPanel(differ, 300).rows.filter((r) => r.kind === "strip").length, 2);
});

test("counts, bytes and compare lines", () => {
  assert.deepEqual(countLetters("CCF"), { C: 2, F: 1 });
  assert.equal(formatBytes(512), "512 B");
  assert.equal(formatBytes(1536), "1.5 KiB");
  assert.equal(formatBytes(undefined), null);
  assert.deepEqual(compareLines({ source: "image", shape: "1x64x64x3", psnr_db: 34.123, identical: false, ssim: 0.98765 }),
    ["PSNR 34.12 dB · SSIM 0.9877", "image 1x64x64x3"]);
  assert.equal(compareLines({ source: "image", psnr_db: null, identical: true, ssim: 1 })[0],
    "PSNR identical (inf dB) · SSIM 1.0000");
  assert.deepEqual(compareLines(null), []);
});

test("verification: probes, accepted and probe cost; unknown letters use the server's label", () => {
  const run = { timeline: "CCFRFC", probes: 3, accepted: 2, rejected: 1, probe_cost_calls: 0.25,
                timeline_legend: { C: "computed", Z: "zone skipped (experimental)" } };
  assert.match(textLines(run)[1], /verify 2\/3 ok \(cost 0\.25 calls\)/);
  assert.deepEqual(legend({ ...run, timeline: "CZ" }).map((i) => i.label), ["computed", "zone skipped"]);
});

test("token methods: partial steps drawn in their own colour, work in token-blocks, or why they were off", () => {
  const run = { ...RUN, tag: "output-backtest-1/5-w3-f1-budget", timeline: "CCCPPPC", token_method: "clusters",
                partial_calls: 3, token_work: { token_ratio: 3.456, flops_ratio: 3.9 }, token_trust: 0.8,
                token_gain: 0.42 };
  const lines = textLines(run);
  assert.equal(lines[lines.length - 1],
               "tokens clusters: 3 partial steps · 3.46x fewer token-blocks (3.90x FLOPs) · trust 0.80 · gain 0.42");
  assert.deepEqual(legend(run).map((i) => i.label), ["computed", "partial"]);
  assert.notEqual(cellColor("P"), cellColor("F"));
  const off = textLines({ ...run, token_note: "block anatomy self-check failed" });
  assert.match(off[off.length - 1], /tokens clusters: off \(block anatomy self-check failed\)/);
  assert.equal(textLines(RUN).length, 2);  // no token method: no token line
});

test("a few-step run says why every step was computed", () => {
  const run = { ...RUN, tag: "output-backtest-1/5-w3-f1-budget", budget: 4, total_steps: 4,
                schedule_note: "4 steps: too few to cache safely, every step computed" };
  assert.match(textLines(run)[2], /output cache: budget 4 of 4 steps · 4 steps: too few to cache safely/);
});

test("progressive resolution under the cache: the stage plan and the joint work", () => {
  const run = { ...RUN, stages: { plan: [[4, 0, 6], [2, 6, 12], [1, 12, 20]], token_ratio: 7.034, flops_ratio: 8.5 } };
  const lines = textLines(run);
  assert.equal(lines[lines.length - 1],
               "stages 1/4 0-5, 1/2 6-11, full 12-19 · with cache 7.03x fewer token-blocks (8.50x FLOPs)");
  assert.equal(stageLine({ ...RUN, stages: {} }), "");
  assert.equal(stageLine({ ...RUN, stages: { plan: [[1, 0, 10, 2], [2, 10, 20, 2], [1, 20, 30]] } }),
               "stages 1/2 frames 0-9, 1/2 1/2 frames 10-19, full 20-29");
  assert.equal(textLines(RUN).length, 2);  // no resolution stages: no stage line
});

// Progressive Resolution + Forecast Cache, as the server reports them (micro FLUX, 20 steps, factor 2,
// low_res_share 0.4, anchor on; nodes/resolution_hooks.py note_resolution_step).
const PLAN = [[2, 0, 8], [1, 8, 20]];
const STEPS20 = Array.from({ length: 20 }, (_, i) => i);
// The cache around all stages (Progressive Resolution after Forecast Cache on the model path): one run.
const AROUND = { ...RUN, total_steps: 20, calls: 21, computed_calls: 6, timeline: "CCFFCFFFCCFFFFFFFFFFF",
                 call_steps: [0, 0, 1, 3, 5, 6, 8, 9, 10, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19],
                 resolution_steps: [-1, ...STEPS20], stages: { plan: PLAN, token_ratio: 3.1, flops_ratio: 3.4 } };
// The cache inside each stage (the shipped flux_progressive_resolution workflow): one run per stage.
const STAGE_RUNS = [
  { ...RUN, token_method: "clusters", total_steps: 1, calls: 1, computed_calls: 1, forecast_calls: 0, evaluations: 1, computed_evaluations: 1,
    timeline: "C", call_steps: [0], resolution_steps: [-1], wall_seconds: 0.1, wall_speedup_estimate: null,
    stages: { plan: PLAN } },
  { ...RUN, total_steps: 8, calls: 8, computed_calls: 2, forecast_calls: 6, evaluations: 8, computed_evaluations: 2,
    timeline: "CFFFCPPP", partial_calls: 3, token_method: "clusters", token_work: { token_ratio: 2.0 },
    call_steps: [0, 1, 2, 3, 4, 5, 6, 7], resolution_steps: [0, 1, 2, 3, 4, 5, 6, 7], wall_seconds: 0.3,
    wall_speedup_estimate: 2.0, stages: { plan: PLAN } },
  { ...RUN, token_method: "clusters", total_steps: 12, calls: 12, computed_calls: 3, forecast_calls: 9, evaluations: 12, computed_evaluations: 3,
    timeline: "CFFFCFFFCFFF", call_steps: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], resolution_steps: STEPS20.slice(8),
    wall_seconds: 0.6, wall_speedup_estimate: 3.0, stages: { plan: PLAN, token_ratio: 5.2, flops_ratio: 5.9 } },
];

function bandOf(panel) {
  return panel.rows.find((r) => r.kind === "band");
}

test("stage band: one segment per stage under the strip, on the cells of the calls that ran at that scale", () => {
  assert.deepEqual(stageBand(AROUND).map((g) => [g.label, g.first, g.last]),
                   [["anchor", 0, 0], ["1/2", 1, 8], ["full", 9, 20]]);
  const panel = buildPanel(AROUND, 300);
  const strip = panel.rows.find((r) => r.kind === "strip");
  const band = bandOf(panel);
  assert.ok(band, "a run with stages draws the band");
  assert.equal(panel.rows.indexOf(band), panel.rows.indexOf(strip) + 1);  // right under the strip
  assert.ok(band.y >= strip.y + strip.h && band.y - (strip.y + strip.h) <= 4 && band.h > 0 && band.h < strip.h);
  for (const g of band.segments) {  // the segment covers exactly its calls' cells
    const first = strip.cells[g.first], last = strip.cells[g.last];
    assert.ok(Math.abs(g.x - first.x) < 1e-9 && Math.abs(g.x + g.w - (last.x + last.w)) < 1e-9, g.label);
  }
  // the 1/2 stage covers calls 1-8, although the cache's own call_steps put the last three at steps 8-10
  assert.deepEqual(AROUND.call_steps.slice(6, 9), [8, 9, 10]);
  const [anchor, low, full] = band.segments;
  assert.equal(low.color, stageColor([2, 0, 8]));
  assert.notEqual(low.color, full.color);
  assert.equal(anchor.color, full.color);  // the anchor call runs at full resolution
  for (const g of band.segments) assert.ok(!Object.values(CELL_COLORS).includes(g.color), "band shades differ from cells");
  // the band's legend: each scale once, coarse first; the stage text line stays
  const legends = panel.rows.filter((r) => r.kind === "legend");
  assert.equal(legends.length, 2);
  assert.equal(legends[1].title, "resolution");
  assert.deepEqual(legends[1].items.map((i) => i.label), ["1/2 res", "full"]);
  assert.match(textLines(AROUND).at(-1), /^stages 1\/2 0-7, full 8-19/);
});

test("stage band shades: darker per halving of the image tokens, video frames included", () => {
  assert.deepEqual([[1, 0, 1], [2, 0, 1], [4, 0, 1]].map(stageColor), [STAGE_COLORS[0], STAGE_COLORS[2], STAGE_COLORS[4]]);
  assert.equal(stageColor([1, 0, 1, 2]), STAGE_COLORS[1]);  // half the frames: half the tokens
  assert.equal(stageColor([2, 0, 1, 2]), STAGE_COLORS[3]);
  assert.equal(stageScale([2, 0, 1, 2]), "1/2 1/2 frames");
  const video = { timeline: "CFFC", resolution_steps: [0, 1, 2, 3], stages: { plan: [[1, 0, 2, 2], [1, 2, 4]] } };
  assert.deepEqual(stageBand(video).map((g) => [g.label, g.first, g.last]), [["1/2 frames", 0, 1], ["full", 2, 3]]);
  // a step outside the plan is shown as such (grey "?"), never as the anchor call
  const outside = stageBand({ ...video, resolution_steps: [0, 1, 2, 9] });
  assert.deepEqual(outside.map((g) => [g.label, g.color]).at(-1), ["?", NEUTRAL_COLOR]);
});

test("no band without stages, without resolution_steps, or when they do not match the calls", () => {
  for (const run of [RUN, { ...AROUND, stages: {} }, { ...AROUND, resolution_steps: undefined },
                     { ...AROUND, resolution_steps: STEPS20 }, { ...AROUND, resolution_steps: "0,1" }]) {
    assert.deepEqual(stageBand(run), []);
    const panel = buildPanel(run, 300);
    assert.equal(bandOf(panel), undefined);
    assert.equal(panel.rows.filter((r) => r.kind === "legend").length, 1);
  }
  assert.equal(buildPanel({ ...AROUND, resolution_steps: undefined }, 300).height + BAND_H + BAND_GAP + LINE_H,
               buildPanel(AROUND, 300).height);  // the band and its legend make room for themselves
});

test("CFG branch strips share one band, placed under the last strip", () => {
  const run = { ...AROUND, branch_timelines: { cond: AROUND.timeline, uncond: AROUND.timeline.replace(/F$/, "R") } };
  const panel = buildPanel(run, 300);
  const strips = panel.rows.filter((r) => r.kind === "strip");
  const band = bandOf(panel);
  assert.equal(strips.length, 2);
  assert.equal(panel.rows.indexOf(band), panel.rows.indexOf(strips[1]) + 1);
  assert.equal(band.x, strips[1].x);
  assert.equal(band.label, "res");
});

test("a cache inside each stage: its runs of one sampling join into one strip, counts and band", () => {
  let run = STAGE_RUNS[0];
  for (const next of STAGE_RUNS.slice(1)) run = mergeStageRuns(run, next);
  assert.equal(run.timeline, "C" + "CFFFCPPP" + "CFFFCFFFCFFF");
  assert.deepEqual(run.resolution_steps, [-1, ...STEPS20]);
  assert.equal(run.calls, 21);
  assert.equal(run.computed_calls, 6);
  assert.equal(run.partial_calls, 3);
  assert.equal(run.total_steps, 20);
  assert.equal(run.merged_runs, 3);
  assert.ok(Math.abs(run.evaluation_speedup - 21 / 6) < 1e-12);
  // wall: each stage's estimate weighted by its time; the all-computed anchor run counts as 1.0
  assert.ok(Math.abs(run.wall_speedup_estimate - (0.1 * 1 + 0.3 * 2 + 0.6 * 3) / 1.0) < 1e-12);
  assert.deepEqual(run.stages, STAGE_RUNS[2].stages);  // the joint work, complete at the last stage
  const lines = textLines(run);
  assert.match(lines[0], /6\/21 calls computed · 3\.50x fewer model evals/);
  assert.match(lines[1], /3 cache runs, one per stage/);
  assert.match(lines.find((l) => l.startsWith("tokens")), /^tokens clusters: 3 partial steps$/);
  const panel = buildPanel(run, 300);
  assert.deepEqual(bandOf(panel).segments.map((g) => [g.label, g.first, g.last]),
                   [["anchor", 0, 0], ["1/2", 1, 8], ["full", 9, 20]]);
  // partial steps keep their own cells, inside the low-resolution segment
  const strip = panel.rows.find((r) => r.kind === "strip");
  assert.deepEqual(strip.cells.map((c, i) => (c.letter === "P" ? i : -1)).filter((i) => i >= 0), [6, 7, 8]);
  assert.deepEqual(legend(run).map((i) => i.label), ["computed", "forecast", "partial"]);
});

test("runs that do not continue a sampling's stages are not joined", () => {
  assert.equal(mergeStageRuns(STAGE_RUNS[2], STAGE_RUNS[1]), null);  // steps start again: a new sampling
  assert.equal(mergeStageRuns(RUN, STAGE_RUNS[1]), null);  // no resolution run before
  assert.equal(mergeStageRuns(STAGE_RUNS[1], RUN), null);
  assert.equal(mergeStageRuns(null, STAGE_RUNS[1]), null);
  const mid = mergeStageRuns(STAGE_RUNS[1], { ...STAGE_RUNS[2], wall_speedup_estimate: null });
  assert.equal(mid.wall_speedup_estimate, null);  // a part with forecasts but no estimate: no estimate
  assert.equal(mid.merged_runs, 2);
});
