// Unit tests of the pure layout code of the web extension (node --test; run by
// tests/browser/test_timeline_js.py). No browser needed.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

// The browser loads web/js/*.js as ES modules; node would read a plain .js file as CommonJS
// (there is no package.json beside it), so import the source as an ES module explicitly.
const source = readFileSync(new URL("../../web/js/dit_accel_timeline.js", import.meta.url), "utf8");
const {
  buildPanel, cellColor, CELL_COLORS, compareLines, countLetters, formatBytes, legend, NEUTRAL_COLOR, strips,
  stageLine, textLines,
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
