// DiT Accel web extension: draws each run's diagnostics on the Forecast Cache node (per-call
// timeline with partial steps, a band for Progressive Resolution's stages under it, measured
// speed-up in model evaluations, cache memory) and the A/B numbers on the
// Compare node, and the newest report on Calibrate Forecasts. Cosmetic only: nothing here changes
// what a workflow computes or saves, except that a node grows taller to make room for its panel.
// Setting "DiTAccel.Diagnostics.Show" hides it.
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";
import { buildPanel, compareLines, drawPanel, LINE_H, mergeStageRuns, PAD } from "./dit_accel_timeline.js";

const EXTENSION = "DiTAccel.Diagnostics";
const SETTING_ID = "DiTAccel.Diagnostics.Show";
const EVENT = "dit_accel.run"; // nodes/diagnostics.py EVENT
const FORECAST_NODE = "DiTAccelForecastCache";
const COMPARE_NODE = "DiTAccelCompare";
const COMPARE_UI_KEY = "dit_accel_compare"; // nodes/compare_node.py UI_KEY
const CALIBRATION_EVENT = "dit_accel.calibration"; // nodes/diagnostics.py CALIBRATION_EVENT
const CALIBRATE_NODE = "DiTAccelCalibrate";

function showDiagnostics() {
  const store = app.extensionManager?.setting;
  const value = store?.get ? store.get(SETTING_ID) : app.ui?.settings?.getSettingValue?.(SETTING_ID, true);
  return value !== false;
}

// Server ids are strings; nodes inside a subgraph come as "outer:inner".
function findNode(nodeId) {
  if (nodeId == null || !app.graph) return null;
  const id = String(nodeId);
  const byId = (graph, key) => graph?.getNodeById?.(Number(key)) ?? graph?.getNodeById?.(key) ?? null;
  const direct = byId(app.graph, id);
  if (direct) return direct;
  const last = id.split(":").pop();
  for (const sub of app.graph.subgraphs?.values?.() ?? []) {
    const found = byId(sub, last);
    if (found) return found;
  }
  return null;
}

// Grow the node (never shrink it) so the panel fits below its widgets.
function makeRoom(node, panelHeight) {
  const base = node.computeSize ? node.computeSize() : node.size;
  const want = [Math.max(node.size[0], base[0], 300), Math.max(node.size[1], base[1] + panelHeight)];
  if (want[0] !== node.size[0] || want[1] !== node.size[1]) node.setSize(want);
}

function redraw() {
  app.graph?.setDirtyCanvas?.(true, true);
}

function onRun(event) {
  const payload = event?.detail;
  const node = findNode(payload?.node_id);
  if (!node || !payload?.run) return;
  const previous = node.ditAccelDiagnostics;
  const samePrompt = previous && payload.prompt_id && previous.promptId === payload.prompt_id;
  // A cache after Progressive Resolution runs once per stage: the stages of one sampler's run show as one strip.
  const sameSampler = samePrompt && previous.samplerNodeId === (payload.sampler_node_id ?? null);
  const merged = sameSampler ? mergeStageRuns(previous.run, payload.run) : null;
  node.ditAccelDiagnostics = {
    run: merged ?? payload.run,
    promptId: payload.prompt_id ?? null,
    samplerNodeId: payload.sampler_node_id ?? null,
    runsInPrompt: samePrompt ? previous.runsInPrompt + 1 : 1,
    received: (node.ditAccelDiagnostics?.received ?? 0) + 1,
  };
  if (showDiagnostics()) {
    const panel = buildPanel(payload.run, node.size[0], { runsInPrompt: node.ditAccelDiagnostics.runsInPrompt });
    makeRoom(node, panel.height);
  }
  redraw();
}

function drawForecastPanel(node, ctx) {
  const state = node.ditAccelDiagnostics;
  if (!state || !showDiagnostics() || node.flags?.collapsed) return;
  const panel = buildPanel(state.run, node.size[0], { runsInPrompt: state.runsInPrompt });
  const drawn = drawPanel(ctx, panel, 0, node.size[1] - panel.height);
  // Kept for tests and debugging: what the last frame drew (cells and their screen positions).
  node.ditAccelDrawn = { ...drawn, frame: (node.ditAccelDrawn?.frame ?? 0) + 1, textLines: panel.rows
    .filter((r) => r.kind === "text").map((r) => r.text) };
}

// Calibrate Forecasts: its newest report ("recorded 2/4 runs ...", "saved ... held-back error ..."), wrapped.
function calibrationLines(report, width) {
  if (!report?.message) return [];
  const perLine = Math.max(20, Math.floor((width - 2 * PAD) / 6.5));
  const lines = [];
  let line = "";
  for (const word of String(report.message).split(" ")) {
    if (line && line.length + 1 + word.length > perLine) {
      lines.push(line);
      line = word;
    } else {
      line = line ? `${line} ${word}` : word;
    }
  }
  if (line) lines.push(line);
  return lines;
}

function onCalibration(event) {
  const payload = event?.detail;
  const node = findNode(payload?.node_id);
  if (!node || !payload?.calibration) return;
  node.ditAccelCalibration = payload.calibration;
  if (showDiagnostics()) {
    makeRoom(node, calibrationLines(payload.calibration, node.size[0]).length * LINE_H + 2 * PAD);
  }
  redraw();
}

function drawCalibrationPanel(node, ctx) {
  drawTextPanel(node, ctx, calibrationLines(node.ditAccelCalibration, node.size[0]));
}

function drawComparePanel(node, ctx) {
  drawTextPanel(node, ctx, compareLines(node.ditAccelCompare));
}

function drawTextPanel(node, ctx, lines) {
  if (!lines.length || !showDiagnostics() || node.flags?.collapsed) return;
  const height = lines.length * LINE_H + 2 * PAD;
  const y0 = node.size[1] - height;
  ctx.save();
  ctx.fillStyle = "rgba(0,0,0,0.25)";
  ctx.fillRect(2, y0, node.size[0] - 4, height - 2);
  ctx.fillStyle = "#d0d7de";
  ctx.font = "12px sans-serif";
  ctx.textAlign = "left";
  lines.forEach((text, i) => ctx.fillText(text, PAD, y0 + PAD + (i + 1) * LINE_H - 4, node.size[0] - 2 * PAD));
  ctx.restore();
  node.ditAccelDrawn = { textLines: lines, frame: (node.ditAccelDrawn?.frame ?? 0) + 1 };
}

function chainDraw(nodeType, draw) {
  const original = nodeType.prototype.onDrawForeground;
  nodeType.prototype.onDrawForeground = function (ctx, ...rest) {
    const r = original?.apply(this, [ctx, ...rest]);
    try {
      draw(this, ctx);
    } catch (err) {
      console.warn("DiT Accel: could not draw diagnostics", err);
    }
    return r;
  };
}

if (!window.__ditAccelDiagnosticsLoaded) {
  // Guard against a second copy of this file (e.g. the pack installed twice): one listener only.
  window.__ditAccelDiagnosticsLoaded = true;
  app.registerExtension({
    name: EXTENSION,
    settings: [
      {
        id: SETTING_ID,
        category: ["DiT Accel", "Diagnostics", "Show"],
        name: "Show run diagnostics on DiT Accel nodes",
        tooltip: "After each run, draw the per-step timeline (computed / forecast / rejected / partial, and " +
          "which calls ran at which Progressive Resolution stage), the measured " +
          "speed-up in model evaluations and the cache memory on the Forecast Cache node, and PSNR / SSIM on " +
          "the Compare node. Display only: workflows run the same either way.",
        type: "boolean",
        defaultValue: true,
        onChange: redraw,
      },
    ],
    async setup() {
      api.addEventListener(EVENT, onRun);
      api.addEventListener(CALIBRATION_EVENT, onCalibration);
    },
    async beforeRegisterNodeDef(nodeType, nodeData) {
      if (nodeData?.name === FORECAST_NODE) {
        chainDraw(nodeType, drawForecastPanel);
      } else if (nodeData?.name === CALIBRATE_NODE) {
        chainDraw(nodeType, drawCalibrationPanel);
      } else if (nodeData?.name === COMPARE_NODE) {
        chainDraw(nodeType, drawComparePanel);
        const onExecuted = nodeType.prototype.onExecuted;
        nodeType.prototype.onExecuted = function (message) {
          const r = onExecuted?.apply(this, arguments);
          const result = message?.[COMPARE_UI_KEY]?.[0];
          if (result) {
            this.ditAccelCompare = result;
            if (showDiagnostics()) makeRoom(this, compareLines(result).length * LINE_H + 2 * PAD);
            redraw();
          }
          return r;
        };
      }
    },
  });
}
