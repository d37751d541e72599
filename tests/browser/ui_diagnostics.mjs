// Drives the real ComfyUI frontend in headless Debian Chromium (playwright-core) for
// tests/browser/test_ui_diagnostics.py. Usage: node ui_diagnostics.mjs CONFIG.json
//
// CONFIG: { url, chromium, out_dir, timeout_ms, workflows: {name: ui_json}, main: name, prompt: api_prompt,
//           stages: {workflow: name, prompt: api_prompt} (optional) }
// 1. opens the frontend, loads every workflow and records missing node types and dialogs;
// 2. loads the main workflow and queues `prompt` (the same graph with test models swapped in,
//    same node ids) under this page's client id, as the Queue button would;
// 3. waits until the DiT Accel extension has drawn the run on the Forecast Cache node and the
//    numbers on the Compare node, reads the canvas pixels under every timeline cell and saves
//    screenshots;
// 4. checks the hide setting;
// 5. with `stages`: loads that workflow (Progressive Resolution before Forecast Cache), queues its prompt,
//    waits until it has finished and reads the Forecast Cache panel again: strip, stage band and the pixels
//    at each band segment's edges. Everything it saw goes to OUT_DIR/result.json; pytest judges it.
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
mkdirSync(config.out_dir, { recursive: true });
const timeout = config.timeout_ms ?? 240000;
const result = { workflows: {}, console: [], steps: [] };
const t0 = Date.now();
const step = (name) => result.steps.push([name, Date.now() - t0]);

function save() {
  writeFileSync(join(config.out_dir, "result.json"), JSON.stringify(result, null, 1));
}

// Light Chromium: one renderer process, no GPU, nothing that calls out of this machine.
const browser = await chromium.launch({
  executablePath: config.chromium ?? "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--renderer-process-limit=1",
    "--disable-extensions", "--mute-audio"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1440, height: 860 }, deviceScaleFactor: 1 });
  page.setDefaultTimeout(timeout);
  page.on("console", (m) => { if (m.type() === "error" || m.type() === "warning") result.console.push(`${m.type()}: ${m.text()}`); });
  page.on("pageerror", (e) => result.console.push(`pageerror: ${e.message}`));
  // A first visit would open the template browser and a "Nodes 2.0" banner over the canvas.
  await page.addInitScript(() => localStorage.setItem("vueNodesBannerDismissed", "true"));
  await page.goto(config.url, { waitUntil: "domcontentloaded" });
  await page.waitForFunction(() => window.comfyAPI?.app?.app?.graph && window.__ditAccelDiagnosticsLoaded
    && window.LiteGraph?.registered_node_types?.DiTAccelForecastCache);
  step("frontend ready");
  result.extension = await page.evaluate(() => ({
    setting: window.comfyAPI.app.app.extensionManager?.setting?.get?.("DiTAccel.Diagnostics.Show"),
    loaded_once: window.__ditAccelDiagnosticsLoaded === true,
  }));

  // 1. Every workflow opens without missing nodes.
  // The main workflow goes last and stays open for step 2.
  const order = Object.keys(config.workflows).filter((n) => n !== config.main).concat([config.main]);
  for (const name of order) {
    const workflow = config.workflows[name];
    result.workflows[name] = await page.evaluate(async ([wf, wfName]) => {
      const app = window.comfyAPI.app.app;
      await app.loadGraphData(wf, true, true, wfName);
      await new Promise((r) => setTimeout(r, 300));
      const registered = window.LiteGraph.registered_node_types;
      const nodes = app.graph.nodes;
      const dialogs = [...document.querySelectorAll(".p-dialog, [role=dialog]")].map((d) => d.innerText.slice(0, 300));
      return {
        nodes: nodes.length,
        missing: nodes.filter((n) => !registered[n.type] || n.has_errors).map((n) => n.type),
        dialogs,
      };
    }, [workflow, name]);
    await page.keyboard.press("Escape");
  }
  step("workflows loaded");

  // 2. The main workflow, queued with test models.
  const ids = await page.evaluate(async () => {
    const app = window.comfyAPI.app.app;
    const find = (type) => app.graph.nodes.find((n) => n.type === type)?.id ?? null;
    const { output } = await app.graphToPrompt();
    return { forecast: find("DiTAccelForecastCache"), compare: find("DiTAccelCompare"), frontend_prompt: output,
             client_id: window.comfyAPI.api.api.clientId };
  });
  Object.assign(result, ids);
  await page.evaluate((prompt) => {
    const app = window.comfyAPI.app.app;
    // Show the values that really run (test models, small latent) in the widgets, for the screenshots.
    for (const [id, spec] of Object.entries(prompt)) {
      const node = app.graph.getNodeById(Number(id));
      if (!node || node.type !== spec.class_type) continue;
      for (const w of node.widgets ?? []) {
        const v = spec.inputs[w.name];
        if (v !== undefined && !Array.isArray(v)) w.value = v;
      }
    }
    // Progress messages, to check the progress bar still moves on forecast steps.
    window.__ditAccelProgress = [];
    window.comfyAPI.api.api.addEventListener("progress", (e) => window.__ditAccelProgress.push(e.detail));
  }, config.prompt);
  const queued = await page.evaluate(async ([prompt, clientId]) => {
    const r = await fetch("/prompt", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ prompt, client_id: clientId }) });
    return { status: r.status, body: await r.json() };
  }, [config.prompt, ids.client_id]);
  result.queued = queued;
  step("queued");
  save();
  if (queued.status !== 200) throw new Error(`POST /prompt answered ${queued.status}`);

  // 3. Wait for both panels, then look at them.
  await page.waitForFunction(([f, c]) => {
    const g = window.comfyAPI.app.app.graph;
    return g.getNodeById(f)?.ditAccelDrawn?.strips?.length && g.getNodeById(c)?.ditAccelDrawn?.textLines?.length;
  }, [ids.forecast, ids.compare], { polling: 250 });
  step("panels drawn");
  // Image previews load asynchronously; wait for them (a soft wait: only the screenshots need them).
  result.previews_loaded = await page.waitForFunction(() => {
    const previews = window.comfyAPI.app.app.graph.nodes.filter((n) => n.type === "PreviewImage");
    return previews.every((n) => n.imgs?.length && n.imgs.every((i) => i.complete && i.naturalWidth > 0));
  }, null, { timeout: 20000, polling: 250 }).then(() => true, () => false);
  result.progress = await page.evaluate(() => window.__ditAccelProgress);

  const setView = (mode, nodeId = ids.forecast) => page.evaluate(async ([m, f]) => {
    const app = window.comfyAPI.app.app;
    const canvas = app.canvas;
    const nodes = app.graph.nodes;
    const el = canvas.canvas;
    let scale, offset;
    if (m === "overview") {
      const minX = Math.min(...nodes.map((n) => n.pos[0])), minY = Math.min(...nodes.map((n) => n.pos[1] - 40));
      const maxX = Math.max(...nodes.map((n) => n.pos[0] + n.size[0]));
      const maxY = Math.max(...nodes.map((n) => n.pos[1] + n.size[1]));
      scale = Math.min((el.clientWidth - 100) / (maxX - minX), (el.clientHeight - 80) / (maxY - minY));
      offset = [-minX + 70 / scale, -minY + 50 / scale]; // clear of the side bar
    } else {
      const node = app.graph.getNodeById(f);
      scale = 1.25;
      offset = [-node.pos[0] + 120, -node.pos[1] + 110]; // clear of the breadcrumb overlay
    }
    canvas.ds.scale = scale;
    canvas.ds.offset = offset;
    const before = app.graph.getNodeById(f).ditAccelDrawn.frame;
    canvas.setDirty(true, true);
    for (let i = 0; i < 100 && app.graph.getNodeById(f).ditAccelDrawn.frame === before; i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    await new Promise((r) => setTimeout(r, 400)); // image previews settle
    return { scale, frame: app.graph.getNodeById(f).ditAccelDrawn.frame };
  }, [mode, nodeId]);

  await setView("overview");
  await page.screenshot({ path: join(config.out_dir, "overview.png") });
  const view = await setView("closeup");
  result.closeup_view = view;
  const seen = await page.evaluate(([f, c]) => {
    const app = window.comfyAPI.app.app;
    const node = app.graph.getNodeById(f);
    const drawn = node.ditAccelDrawn;
    const ctx = app.canvas.canvas.getContext("2d");
    const strips = drawn.strips.map((s) => ({
      label: s.label, letters: s.letters, counts: s.counts, cells: s.cells,
      pixels: s.centres.map((p) => Array.from(ctx.getImageData(Math.round(p.x), Math.round(p.y), 1, 1).data.slice(0, 3))),
    }));
    return { strips, text: drawn.textLines, compare_text: app.graph.getNodeById(c).ditAccelDrawn.textLines,
             compare_result: app.graph.getNodeById(c).ditAccelCompare, node_size: node.size.slice() };
  }, [ids.forecast, ids.compare]);
  result.forecast_panel = seen;
  await page.screenshot({ path: join(config.out_dir, "closeup.png") });
  step("screenshots");

  // 4. The setting hides the panels, and showing them again brings them back (both nodes in view).
  await setView("overview");
  result.hide_setting = await page.evaluate(async ([f, c]) => {
    const app = window.comfyAPI.app.app;
    const store = app.extensionManager.setting;
    const nodes = [app.graph.getNodeById(f), app.graph.getNodeById(c)];
    const drawnAfter = async () => {
      nodes.forEach((n) => { n.ditAccelDrawn = null; });
      app.canvas.setDirty(true, true);
      await new Promise((r) => setTimeout(r, 600));
      return nodes.map((n) => n.ditAccelDrawn !== null);
    };
    await store.set("DiTAccel.Diagnostics.Show", false);
    const hidden = await drawnAfter();
    await store.set("DiTAccel.Diagnostics.Show", true);
    const shown = await drawnAfter();
    return { drawn_while_hidden: hidden, drawn_when_shown: shown };
  }, [ids.forecast, ids.compare]);
  step("hide setting");

  // 5. Progressive Resolution + Forecast Cache: one cache run per stage (and one for the anchor call), joined
  //    on the panel, with the stage band under the strip.
  if (config.stages) {
    const stages = { forecast: await page.evaluate(async ([wf, name]) => {
      const app = window.comfyAPI.app.app;
      await app.loadGraphData(wf, true, true, name);
      await new Promise((r) => setTimeout(r, 300));
      return app.graph.nodes.find((n) => n.type === "DiTAccelForecastCache")?.id ?? null;
    }, [config.workflows[config.stages.workflow], config.stages.workflow]) };
    await page.keyboard.press("Escape");
    stages.queued = await page.evaluate(async ([prompt, clientId]) => {
      const r = await fetch("/prompt", { method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ prompt, client_id: clientId }) });
      return { status: r.status, body: await r.json() };
    }, [config.stages.prompt, ids.client_id]);
    result.stages = stages;
    save();
    if (stages.queued.status !== 200) throw new Error(`POST /prompt (stages) answered ${stages.queued.status}`);
    // Finished (every stage's run sent) once the prompt is in the history.
    stages.finished = await page.evaluate(async ([id, limit]) => {
      for (const until = Date.now() + limit; Date.now() < until;) {
        if ((await (await fetch(`/history/${id}`)).json())[id]) return true;
        await new Promise((r) => setTimeout(r, 500));
      }
      return false;
    }, [stages.queued.body.prompt_id, timeout]);
    if (!stages.finished) throw new Error("the stages prompt did not finish");
    await page.waitForFunction((f) => window.comfyAPI.app.app.graph.getNodeById(f)?.ditAccelDrawn?.band,
      stages.forecast, { polling: 250 });
    step("stages drawn");
    // The shipped workflow has nodes right below Forecast Cache, drawn over its grown panel (the prompt
    // text box is a DOM element, over the canvas even when the node is clicked): move them below the panel,
    // on this page only (the workflow file is not saved).
    stages.moved = await page.evaluate((f) => {
      const app = window.comfyAPI.app.app;
      const fc = app.graph.getNodeById(f);
      const bottom = fc.pos[1] + fc.size[1] + 40;
      const overlaps = (n) => n !== fc && n.pos[0] < fc.pos[0] + fc.size[0] && n.pos[0] + n.size[0] > fc.pos[0]
        && n.pos[1] + n.size[1] > fc.pos[1] && n.pos[1] < bottom;
      const moved = app.graph.nodes.filter(overlaps);
      for (const n of moved) n.pos = [n.pos[0], n.pos[1] + bottom - Math.min(...moved.map((m) => m.pos[1]))];
      return moved.map((n) => n.type);
    }, stages.forecast);
    await setView("closeup", stages.forecast);
    stages.panel = await page.evaluate((f) => {
      const app = window.comfyAPI.app.app;
      const node = app.graph.getNodeById(f);
      const drawn = node.ditAccelDrawn;
      const ctx = app.canvas.canvas.getContext("2d");
      const pixel = (p) => Array.from(ctx.getImageData(Math.round(p.x), Math.round(p.y), 1, 1).data.slice(0, 3));
      return {
        text: drawn.textLines,
        strips: drawn.strips.map((s) => ({ letters: s.letters, counts: s.counts, cells: s.cells, centres: s.centres,
                                           pixels: s.centres.map(pixel) })),
        band: drawn.band.segments.map((g) => ({ ...g, left_pixel: pixel(g.left), right_pixel: pixel(g.right) })),
        run: { merged_runs: node.ditAccelDiagnostics.run.merged_runs,
               resolution_steps: node.ditAccelDiagnostics.run.resolution_steps,
               plan: node.ditAccelDiagnostics.run.stages?.plan },
      };
    }, stages.forecast);
    await page.screenshot({ path: join(config.out_dir, "stages.png") });
    step("stages read");
  }
} catch (err) {
  result.error = String(err?.stack ?? err);
} finally {
  save();
  await browser.close();
}
process.exit(result.error ? 1 : 0);
