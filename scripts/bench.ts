/**
 * `npm run bench [-- --quick]`: side-by-side measurements in one run (scripts/bench-measure.ts), in Node on
 * ONNX Runtime Web's WASM backend and in headless Chromium (WASM, and WebGPU on the software adapter):
 *  1. steering overhead: tokens/s of the instrumented graph with one layer steered / the unmodified graph;
 *  2. our generation loop vs Transformers.js generate() on the same model, backend and greedy settings;
 *  3. k = 1, 2, 4, 8 strengths as rows of one batch vs one row;
 *  4. hidden-state capture throughput, batched vs one prompt at a time;
 *  5. load (Node, fresh processes): parse + analysis + surgery + session vs a session from the unmodified
 *     file, with peak RSS, and what the engine hands ONNX Runtime (no second copy of the weights).
 * Models: the shared test models, and (full run) SmolLM2-135M-shaped decoders with random weights in both
 * export flavours (tests/support/synthetic-decoder.ts), cached in .cache/bench-models/. Where a target is
 * missed, a per-operator ONNX Runtime profile of 1 vs 4 rows says where the time goes.
 *  6. the steerability pass after an extraction vs the extraction itself, on the same examples;
 *  7. persona extraction on chat models: every answer a row of one batch vs one question at a time;
 *  9. fusion: the instrumented graph with attention and rotary fused (as the engine loads it) vs unfused.
 * Prints a table and writes .reports/bench.json. Never fails on a slow machine.
 * --quick: Node only, shared models only, few steps (the CI smoke test). --models a,b,
 * --backends node-wasm,chromium-wasm,chromium-webgpu and --items steerability,capture,batchedStrengths,
 * againstTransformersJs,personaExtraction,fusion,load,pageLoad (items 1 and 5 run only without --items, or 5 when named) run a subset.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, cpSync, existsSync, lstatSync, mkdirSync, openSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { openCheckPair } from '../src/engine/model/check.ts';
import { fusionOptionsFor, loadModel, openCheckedSession, openSession, prepareGraph } from '../src/engine/model/load.ts';
import { selfCheck } from '../src/engine/model/self-check.ts';
import { FolderSource } from '../src/engine/sources/node-folder.ts';
import { externalDataFiles, parseModel } from '../src/engine/onnx/model.ts';
import { createSession, ort } from '../src/engine/model/runtime.ts';
import { SteerableModel } from '../src/engine/model/steerable-model.ts';
import type { ModelConfig } from '../src/engine/model/steerable-model.ts';
import { SMOLLM2_135M, writeSyntheticModel } from '../tests/support/synthetic-decoder.ts';
import { sharedModel } from '../tests/support/paths.ts';
import { type BenchItem, type BenchModel, type BenchPlan, type ModelMeasurements, TARGETS, measureModel, measurePersonaExtraction, median } from './bench-measure.ts';
import { type TransformersModelOptions, transformersGenerator } from './bench-transformers.ts';
import type { ChromiumRun, PageLoad } from './bench-chromium.ts';

const quick = process.argv.includes('--quick');
/** --items: only these measurements (and load when named). */
const items = process.argv.includes('--items') ? process.argv[process.argv.indexOf('--items') + 1].split(',') : undefined;
const withItems = (plan: BenchPlan): BenchPlan => (items ? { ...plan, only: items.filter((item) => item !== 'load') as BenchItem[] } : plan);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
/** One folder of model folders: the synthetic ones, and links to the shared ones (served as /models/ to the page). */
const modelsRoot = path.join(root, '.cache/bench-models');

const SHARED_MODELS: BenchModel[] = [
  { folder: 'stories260K-hf', file: 'onnx/model.onnx', dtype: 'fp32', description: 'torch export, fp32, 5 layers, hidden 64, vocab 512', synthetic: false },
  {
    folder: 'tiny-random-llama-builder-fp16', file: 'onnx/model_fp16.onnx', dtype: 'fp16', externalData: { name: 'model.onnx.data', path: 'onnx/model.onnx.data' },
    description: 'builder export, fp16, 2 layers, hidden 16, vocab 32000', synthetic: false,
  },
];
const SHAPE = 'SmolLM2-135M shape: 30 layers, hidden 576, 9/3 heads, vocab 49152, random weights';
const SYNTHETIC_MODELS: BenchModel[] = [
  { folder: 'smollm2-135m-shape-torch', file: 'onnx/model.onnx', dtype: 'fp32', description: `torch export, fp32 (${SHAPE})`, synthetic: true },
  {
    folder: 'smollm2-135m-shape-builder', file: 'onnx/model_fp16.onnx', dtype: 'fp16', externalData: { name: 'model_fp16.onnx_data', path: 'onnx/model_fp16.onnx_data' },
    description: `builder export, fp16, GroupQueryAttention (${SHAPE})`, synthetic: true,
  },
  // What a browser on WASM gets by default: 4-bit MatMulNBits weights (blocks of 32), as Transformers.js publishes them.
  { folder: 'smollm2-135m-shape-torch-q4', file: 'onnx/model_q4.onnx', dtype: 'q4', description: `torch export, q4 MatMulNBits, fp32 activations (${SHAPE})`, synthetic: true },
  {
    folder: 'smollm2-135m-shape-builder-q4f16', file: 'onnx/model_q4f16.onnx', dtype: 'q4f16', externalData: { name: 'model_q4f16.onnx_data', path: 'onnx/model_q4f16.onnx_data' },
    description: `builder export, q4 MatMulNBits, fp16 activations, GroupQueryAttention (${SHAPE})`, synthetic: true,
  },
];

const PLANS = {
  shared: quick
    ? { steps: 16, repeats: 1, batchRows: [1, 2, 4, 8], capturePrompts: 8, generateTokens: 16, scoringExamples: 8 }
    : { steps: 128, repeats: 5, batchRows: [1, 2, 4, 8], capturePrompts: 32, generateTokens: 64, scoringExamples: 16 },
  synthetic: { steps: 32, repeats: 5, batchRows: [1, 2, 4, 8], capturePrompts: 16, generateTokens: 32, scoringExamples: 8 },
  // The software WebGPU adapter is tens of times slower than WASM: fewer steps, fewer rounds.
  webgpuShared: { steps: 32, repeats: 3, batchRows: [1, 2, 4, 8], capturePrompts: 8, generateTokens: 16, scoringExamples: 8 },
  // A 135M model takes seconds per token there: only the steering overhead, over two steps.
  webgpuSynthetic: { steps: 2, repeats: 1, batchRows: [1], capturePrompts: 0, generateTokens: 0, only: [] },
} satisfies Record<string, BenchPlan>;

function prepareModelsRoot(models: BenchModel[]): void {
  mkdirSync(modelsRoot, { recursive: true });
  for (const model of models) {
    const folder = path.join(modelsRoot, model.folder);
    const builder = model.dtype === 'fp16' || model.dtype === 'q4f16';
    if (model.synthetic) writeSyntheticModel(folder, SMOLLM2_135M, builder ? 'builder' : 'torch', 1, model.dtype.startsWith('q4') ? 'q4' : 'float');
    else {
      // A copy, not a link: the page's model server refuses links that lead out of its folder (issue 14).
      if (existsSync(folder) && lstatSync(folder).isSymbolicLink()) unlinkSync(folder);
      if (!existsSync(folder)) cpSync(sharedModel(model.folder), folder, { recursive: true });
    }
  }
}

function readGraph(model: BenchModel) {
  const file = path.join(modelsRoot, model.folder, model.file);
  const readExternal = async (location: string) => new Uint8Array(readFileSync(path.join(path.dirname(file), location)));
  const config = JSON.parse(readFileSync(path.join(modelsRoot, model.folder, 'config.json'), 'utf8')) as ModelConfig;
  // No EOS: every generation runs its full length, as Transformers.js does under min_new_tokens.
  delete config.eos_token_id;
  return { file, bytes: new Uint8Array(readFileSync(file)), readExternal, config };
}

/** Child mode: load once, print timings and this process's peak RSS. */
async function loadChild(model: BenchModel, instrumented: boolean) {
  const { file, bytes, readExternal, config } = readGraph(model);
  const started = performance.now();
  if (instrumented) {
    // As loadModel does: fused where attention, rotary or RMSNorm match, the fused graph checked against the published one.
    const prepared = await prepareGraph(bytes, path.basename(file), readExternal, {}, false, fusionOptionsFor(config));
    const surgeryMs = performance.now() - started;
    const modelOf = (session: ort.InferenceSession) =>
      new SteerableModel(model.folder, model.file, session, prepared.analysis, prepared.instrumentation, undefined, config, {}, 'wasm');
    const { session, report } = await openCheckedSession(prepared, 'wasm', modelOf);
    if (report.fellBack) throw new Error(`${model.folder}: ${report.fellBack}`);
    // The self-check every load runs (loadModel), timed on its own as well.
    const steerable = modelOf(session);
    const check = await selfCheck(steerable);
    if (!check.ok) throw new Error(`${model.folder}: ${check.message}`);
    // What the engine hands ONNX Runtime: the new graph plus buffers it already had (no copy of the weights).
    const handedMb = ((prepared.fused?.graph ?? prepared.graph).length + prepared.externalData.reduce((sum, entry) => sum + entry.data.length, 0)) / 1e6;
    return { surgeryMs, selfCheckMs: check.milliseconds, totalMs: performance.now() - started, peakRssMb: process.resourceUsage().maxRSS / 1024, handedMb };
  }
  // Both sides read the external data files inside the timing (prepareGraph reads them too).
  const external = [];
  for (const location of externalDataFiles(parseModel(bytes, file))) external.push({ path: location, data: await readExternal(location) });
  await createSession({ graph: bytes, externalData: external }, 'wasm', []);
  const handedMb = (bytes.length + external.reduce((sum, entry) => sum + entry.data.length, 0)) / 1e6;
  return { surgeryMs: 0, selfCheckMs: 0, totalMs: performance.now() - started, peakRssMb: process.resourceUsage().maxRSS / 1024, handedMb };
}

/**
 * Child mode: ONNX Runtime's own per-node profile of one-token steps of the instrumented graph (fused, or as
 * published) with `rows` rows, which ORT Web prints as JSON events on stdout for the parent to read; returns the wall time per step.
 */
async function profileChild(model: BenchModel, rows: number, steps: number, fuse: boolean) {
  const { file, bytes, readExternal, config } = readGraph(model);
  const prepared = await prepareGraph(bytes, path.basename(file), readExternal, {}, false, fuse ? fusionOptionsFor(config) : undefined);
  // The engine's own session first sets ONNX Runtime up the engine's way (threads, compiler flags).
  await (await openSession(prepared, 'wasm')).release();
  const session = await ort.InferenceSession.create(prepared.fused?.graph ?? prepared.graph, {
    executionProviders: ['wasm'], externalData: prepared.externalData, graphOptimizationLevel: 'all', enableProfiling: true, logSeverityLevel: 3,
  });
  const steerable = new SteerableModel(model.folder, model.file, session, prepared.analysis, prepared.instrumentation, undefined, config, {}, 'wasm');
  const layer = Math.floor(prepared.analysis.layerCount / 2);
  const steering = Array.from({ length: rows }, (_, i) => [{ layer, vector: new Float32Array(prepared.analysis.hiddenSize).fill(0.01 * i) }]);
  // One-token steps from the start, so every profiled run is a decode step.
  let result = await steerable.forward({ tokens: Array.from({ length: rows }, () => [10]), steering, keepCache: true });
  const started = performance.now();
  for (let step = 1; step < steps; step++) {
    result = await steerable.forward({ tokens: Array.from({ length: rows }, () => [10 + step]), past: result.cache, steering, keepCache: true });
  }
  const wallMsPerStep = (performance.now() - started) / (steps - 1);
  session.endProfiling();
  return { wallMsPerStep };
}

type StepProfile = ReturnType<typeof profileRun>;

interface ProfileEvent { cat: string; name: string; dur: number; args?: { op_name?: string } }

/** One row count's profile (`rows` rows, fused as the engine runs it or as published): per-operator
 *  milliseconds per step from ORT's profile, the step's run time, and JS time outside run(). */
function profileRun(model: BenchModel, rows: number, fuse: boolean, steps = 24) {
  // Megabytes of events: into a file, as ORT writes them synchronously and a pipe would refuse them (EAGAIN).
  const eventsFile = path.join(modelsRoot, `profile-${model.folder}-${rows}-${fuse ? 'fused' : 'unfused'}.jsonl`);
  const output = openSync(eventsFile, 'w');
  execFileSync(process.execPath, [...process.execArgv, process.argv[1], '--child', 'profile', model.folder, String(rows), String(steps), String(fuse)],
    { stdio: ['ignore', output, 'inherit'] });
  closeSync(output);
  const stdout = readFileSync(eventsFile, 'utf8');
  const events: ProfileEvent[] = [];
  for (const line of stdout.split('\n')) {
    if (line.startsWith('{"cat"')) events.push(JSON.parse(line.replace(/,\s*$/, '')) as ProfileEvent);
  }
  const { wallMsPerStep } = JSON.parse(stdout.trim().split('\n').pop()!) as { wallMsPerStep: number };
  // The first run (the first token, which also warms up) is left out: the rest are decode steps.
  const measured = events.filter((e) => e.cat === 'Session' && e.name === 'model_run').slice(1);
  const perStep = Math.max(1, measured.length);
  const byOp = new Map<string, number>();
  let runsEnded = 0;
  for (const event of events) {
    // A run's node events come before its model_run event, which is written when the run ends.
    if (event.cat === 'Session' && event.name === 'model_run') runsEnded++;
    if (event.cat !== 'Node' || runsEnded < 1 || !event.name.endsWith('_kernel_time')) continue;
    const op = event.args?.op_name ?? 'unknown';
    byOp.set(op, (byOp.get(op) ?? 0) + event.dur / 1000);
  }
  return {
    rows,
    wallMsPerStep,
    runMsPerStep: measured.reduce((sum, e) => sum + e.dur / 1000, 0) / perStep,
    operatorsMsPerStep: Object.fromEntries([...byOp].map(([op, ms]) => [op, ms / perStep] as const).sort((a, b) => b[1] - a[1])),
  };
}

/** Transformers.js on the same ONNX Runtime Web (WASM) as the engine: handed over through the global symbol it checks. */
async function nodeTransformers() {
  (globalThis as Record<symbol, unknown>)[Symbol.for('onnxruntime')] = ort;
  const transformers = await import('@huggingface/transformers');
  transformers.env.allowRemoteModels = false;
  transformers.env.allowLocalModels = true;
  transformers.env.localModelPath = modelsRoot + path.sep;
  transformers.env.useWasmCache = false;
  transformers.env.useFSCache = false;
  return transformers;
}

async function benchModelNode(model: BenchModel, plan: BenchPlan) {
  const child = (mode: string) =>
    JSON.parse(execFileSync(process.execPath, [...process.execArgv, process.argv[1], '--child', mode, model.folder], { encoding: 'utf8', maxBuffer: 1 << 30 }).trim().split('\n').pop()!);
  const load = !items || items.includes('load') ? { plain: child('plain'), instrumented: child('instrumented') } : undefined;

  const { bytes, readExternal, file, config } = readGraph(model);
  // As the engine loads it: fused where attention, rotary or RMSNorm match (item 9 compares the unfused graph beside it).
  const { original, instrumented, analysis, fused, openUnfused } = await openCheckPair(bytes, path.basename(file), readExternal, 'wasm', config, {}, fusionOptionsFor(config));
  const unfused = fused.length > 0 && (!plan.only || plan.only.includes('fusion')) ? await openUnfused() : undefined;
  // Created after the engine's sessions, so ONNX Runtime is already set up the engine's way.
  const options: TransformersModelOptions = { dtype: model.dtype, device: 'auto', executionProviders: ['wasm'], externalData: model.externalData };
  const transformers = !plan.only || plan.only.includes('againstTransformersJs') ? await transformersGenerator(await nodeTransformers(), model.folder, options) : undefined;
  const measurements = await measureModel(original, instrumented, plan, transformers, unfused && { model: unfused, applied: fused });
  await transformers?.dispose();
  await unfused?.dispose();
  await original.dispose();
  await instrumented.dispose();
  return { layers: analysis.layerCount, flavour: analysis.flavour, load, ...measurements, personaExtraction: !items || items.includes('personaExtraction') ? await personaExtractionNode(model) : undefined };
}

/** 7. Chat models only (a tokenizer with a chat template): persona extraction, batched vs one question at a time. */
async function personaExtractionNode(model: BenchModel) {
  if (quick || !existsSync(path.join(modelsRoot, model.folder, 'tokenizer.json'))) return undefined;
  const loaded = await loadModel(new FolderSource(path.join(modelsRoot, model.folder)), { backend: 'wasm', dtype: model.dtype });
  try {
    return loaded.tokenizer?.hasChatTemplate ? await measurePersonaExtraction(loaded) : undefined;
  } finally {
    await loaded.dispose();
  }
}

interface ModelResult {
  model: string;
  description: string;
  backends: Partial<Record<Backend, (ModelMeasurements & { layers?: number; personaExtraction?: PersonaExtraction }) | { skipped: string }>>;
  load?: Awaited<ReturnType<typeof benchModelNode>>['load'];
  profile?: { one: StepProfile; four: StepProfile };
  fusionProfile?: { unfused: StepProfile; fused: StepProfile };
}

type Backend = 'node-wasm' | 'chromium-wasm' | 'chromium-webgpu';
type PersonaExtraction = Awaited<ReturnType<typeof measurePersonaExtraction>>;

const fmt = (value: number | undefined, digits = 2) => (value === undefined || !Number.isFinite(value) ? '—' : value.toFixed(digits));
const verdict = (ok: boolean | undefined) => (ok === undefined ? '' : ok ? 'met' : 'NOT met');

function printTable(results: ModelResult[], machine: string, pageLoad: PageLoad[]) {
  const lines: string[] = [];
  lines.push(`\nTiller bench (${quick ? 'quick' : 'full'}), ${machine}; medians of interleaved rounds`);
  lines.push('| model | backend | 1. steered / plain tok/s (≥ 0.97) | 2. Tiller / Transformers.js tok/s (≥ 1.1), same tokens | 3. 4 rows / 1 row time (≤ 1.6); k=2, 8 | 4. capture batched / single prompts/s | 6. steerability / extraction s (≤ 3×) |');
  lines.push('|---|---|---|---|---|---|---|');
  for (const result of results) {
    for (const [backend, entry] of Object.entries(result.backends) as [Backend, ModelResult['backends'][Backend]][]) {
      if (!entry) continue;
      if ('skipped' in entry) {
        lines.push(`| ${result.model} | ${backend} | skipped: ${entry.skipped} | | | | |`);
        continue;
      }
      const s = entry.steering;
      const t = entry.againstTransformersJs;
      const b = entry.batchedStrengths;
      const c = entry.capture;
      const r = entry.steerability;
      const others = b?.rows.filter((r) => r.rows !== 1 && r.rows !== 4).map((r) => `k=${r.rows} ${fmt(r.timeVsOneRow)}×`).join(', ');
      lines.push(`| ${result.model} | ${backend} | ${s ? `${fmt(s.tokensPerSecond.instrumentedSteered, 1)} / ${fmt(s.tokensPerSecond.unmodified, 1)} = **${fmt(s.ratio, 3)}** ${verdict(s.ratio >= TARGETS.steeringOverhead)}` : '—'} | ` +
        (t ? `${fmt(t.tokensPerSecond.tiller, 1)} / ${fmt(t.tokensPerSecond.transformersJs, 1)} = **${fmt(t.ratio)}** ${verdict(t.ratio >= TARGETS.againstTransformersJs)}, ${t.sameTokens ? 'same tokens' : `tokens differ from #${t.firstDifference}`}` : '—') +
        (b?.fourRowsTimeVsOne === undefined ? ' | — ' : ` | **${fmt(b.fourRowsTimeVsOne)}×** ${verdict(b.fourRowsTimeVsOne <= TARGETS.fourRowsTime)}; ${others} `) +
        (c ? `| ${fmt(c.batched, 1)} / ${fmt(c.single, 1)} = ${fmt(c.ratio)}× ` : '| — ') +
        (r ? `| ${fmt(r.steerabilitySeconds)} / ${fmt(r.extractionSeconds)} = **${fmt(r.ratio, 1)}×** ${verdict(r.ratio <= TARGETS.steerabilityVsExtraction)} (${r.scoredLayers} layers, ${r.examplesPerSide}+${r.examplesPerSide} examples) |` : '| — |'));
    }
  }
  lines.push('\n7. persona extraction (misaligned-persona, 2 answers × 48 tokens per question and side, seed 0): all answers as rows of one batch / one question at a time');
  for (const result of results) {
    for (const [backend, entry] of Object.entries(result.backends)) {
      const p = entry && 'steering' in entry ? entry.personaExtraction : undefined;
      if (p) lines.push(`  ${result.model}, ${backend}: ${fmt(p.secondsBatched, 1)} s / ${fmt(p.secondsOneQuestionAtATime, 1)} s = **${fmt(p.speedup)}× faster**; cosine of the directions per layer ${p.cosineByLayer.map((c) => fmt(c, 3)).join(', ')}`);
    }
  }
  lines.push('\n2. where a generated token\'s time goes, ms: inside session.run / in the loop around it (Tiller | Transformers.js)');
  for (const result of results) {
    for (const [backend, entry] of Object.entries(result.backends)) {
      const t = entry && 'steering' in entry ? entry.againstTransformersJs : undefined;
      if (t) lines.push(`  ${result.model}, ${backend}: ${fmt(t.runMsPerToken.tiller)} / ${fmt(t.loopMsPerToken.tiller)} | ${fmt(t.runMsPerToken.transformersJs)} / ${fmt(t.loopMsPerToken.transformersJs)}`);
    }
  }
  lines.push('\n8. load-to-ready in Chromium/WASM, fresh workers: after the engine worker\'s warm-up / with a cold runtime (the warm-up runs while the visitor reads the page)');
  for (const p of pageLoad) lines.push(`  ${p.model}: ${fmt(p.afterWarmUpMs, 0)} ms / ${fmt(p.coldMs, 0)} ms = **${fmt(p.ratio)}×** (warm-up ${fmt(p.warmUpMs, 0)} ms)`);
  lines.push('\n5. load in Node/WASM (fresh processes): | model | plain ms | parse+analysis+surgery+fusion check+session+self-check ms (surgery, self-check) | MB handed to ORT plain / instrumented | peak RSS MB plain / instrumented |');
  lines.push('|---|---|---|---|---|');
  for (const { model, load } of results) {
    if (!load) continue;
    lines.push(`| ${model} | ${fmt(load.plain.totalMs, 0)} | ${fmt(load.instrumented.totalMs, 0)} (${fmt(load.instrumented.surgeryMs, 1)}, ${fmt(load.instrumented.selfCheckMs, 1)}) | ` +
      `${fmt(load.plain.handedMb)} / ${fmt(load.instrumented.handedMb)} | ${fmt(load.plain.peakRssMb, 0)} / ${fmt(load.instrumented.peakRssMb, 0)} |`);
  }
  lines.push('\n9. fusion (onnx/fusion.ts): decode tok/s of the instrumented graph fused / unfused, middle layer steered');
  for (const result of results) {
    for (const [backend, entry] of Object.entries(result.backends)) {
      const f = entry && 'steering' in entry ? entry.fusion : undefined;
      if (f) lines.push(`  ${result.model}, ${backend}: ${fmt(f.tokensPerSecond.fused, 1)} / ${fmt(f.tokensPerSecond.unfused, 1)} = **${fmt(f.ratio)}×**, ${f.sameTokens ? 'same greedy tokens' : 'greedy tokens DIFFER'} (${f.applied.join(', ')})`);
    }
  }
  const top = (entry: StepProfile, count: number) => Object.entries(entry.operatorsMsPerStep).slice(0, count).map(([op, ms]) => `${op} ${fmt(ms)}`).join(', ');
  const profileLine = (label: string, entry: StepProfile, count: number) =>
    `  ${label}: wall ${fmt(entry.wallMsPerStep)}, session.run ${fmt(entry.runMsPerStep)} (JS outside run ${fmt(entry.wallMsPerStep - entry.runMsPerStep)}); ${top(entry, count)}`;
  for (const { model, profile, fusionProfile } of results) {
    if (profile) {
      lines.push(`\nprofile (4 rows missed ≤ ${TARGETS.fourRowsTime}×), ${model}, ms per decode step, ORT per-operator:`);
      for (const entry of [profile.one, profile.four]) lines.push(profileLine(`${entry.rows} row(s)`, entry, 6));
    }
    if (fusionProfile) {
      lines.push(`\nprofile, ${model}, one row, ms per decode step, ORT per-operator, unfused vs fused:`);
      lines.push(profileLine('unfused', fusionProfile.unfused, 10));
      lines.push(profileLine('fused', fusionProfile.fused, 10));
    }
  }
  console.log(lines.join('\n'));
}

async function main() {
  const childIndex = process.argv.indexOf('--child');
  if (childIndex >= 0) {
    const [mode, folder, ...rest] = process.argv.slice(childIndex + 1);
    const model = [...SHARED_MODELS, ...SYNTHETIC_MODELS].find((m) => m.folder === folder)!;
    const result = mode === 'profile' ? await profileChild(model, Number(rest[0]), Number(rest[1]), rest[2] === 'true') : await loadChild(model, mode === 'instrumented');
    console.log(JSON.stringify(result));
    return;
  }
  const only = process.argv.includes('--models') ? process.argv[process.argv.indexOf('--models') + 1].split(',') : undefined;
  const models = (quick ? SHARED_MODELS : [...SHARED_MODELS, ...SYNTHETIC_MODELS]).filter((model) => !only || only.includes(model.folder));
  const backends = process.argv.includes('--backends') ? process.argv[process.argv.indexOf('--backends') + 1].split(',') : undefined;
  const runs = (backend: Backend) => !backends || backends.includes(backend);
  prepareModelsRoot(models);
  const machine = `${os.cpus()[0]?.model ?? 'cpu'} × ${os.cpus().length}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}`;
  const results: ModelResult[] = models.map((model) => ({ model: model.folder, description: model.description, backends: {} }));
  for (const [index, model] of models.entries()) {
    if (!runs('node-wasm')) continue;
    const plan = withItems(model.synthetic ? PLANS.synthetic : PLANS.shared);
    console.error(`node-wasm: ${model.folder}…`);
    const { load, ...measured } = await benchModelNode(model, plan);
    Object.assign(results[index], { backends: { 'node-wasm': measured }, load });
    if (!quick && (measured.batchedStrengths?.fourRowsTimeVsOne ?? 0) > TARGETS.fourRowsTime) {
      console.error(`profiling ${model.folder} (1 vs 4 rows)…`);
      results[index].profile = { one: profileRun(model, 1, true), four: profileRun(model, 4, true) };
    }
    if (!quick && measured.fusion) {
      console.error(`profiling ${model.folder} (unfused vs fused)…`);
      results[index].fusionProfile = { unfused: profileRun(model, 1, false), fused: profileRun(model, 1, true) };
    }
  }
  let chromium: ChromiumRun | undefined;
  const browserBackends = (['wasm', 'webgpu'] as const).filter((backend) => runs(`chromium-${backend}`));
  if (quick) {
    console.error('quick run: Node/WASM on the shared models only (no Chromium, no synthetic SmolLM2-shaped models)');
  } else if (browserBackends.length > 0) {
    const requests = models.flatMap((model) => browserBackends.map((backend) => ({
      model,
      backend,
      plan: withItems(backend === 'webgpu'
        ? (model.synthetic ? PLANS.webgpuSynthetic : PLANS.webgpuShared)
        : { ...(model.synthetic ? PLANS.synthetic : PLANS.shared), warmupSeconds: 20 }),
    })));
    // Imported here only: Vite and Playwright would otherwise weigh on the load children's peak RSS.
    const { runInChromium } = await import('./bench-chromium.ts');
    // 8. Load-to-ready: the real model folders (a tokenizer, as the app loads them), on WASM.
    const pageLoadModels = runs('chromium-wasm') && (!items || items.includes('pageLoad'))
      ? models.filter((model) => existsSync(path.join(modelsRoot, model.folder, 'tokenizer.json')) && !model.synthetic) : [];
    chromium = await runInChromium(modelsRoot, requests, (request, outcome) => {
      results[models.indexOf(request.model)].backends[`chromium-${request.backend}`] = outcome;
    }, pageLoadModels);
  }
  printTable(results, machine, chromium?.pageLoad ?? []);
  mkdirSync(path.join(root, '.reports'), { recursive: true });
  writeFileSync(path.join(root, '.reports/bench.json'), JSON.stringify({
    date: new Date().toISOString(), machine, command: `npm run bench${quick ? ' -- --quick' : ''}`, quick, targets: TARGETS, plans: PLANS, chromium, results,
  }, null, 2));
  console.log('\n"MB handed to ORT" is the graph plus the buffers the engine passes as external data (the weights are re-pointed, not copied); ' +
    'peak RSS includes ONNX Runtime\'s WASM heap, which holds its own copy of the weights in both cases.');
  console.log('wrote .reports/bench.json');
}

await main();
