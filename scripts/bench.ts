/**
 * `npm run bench [-- --quick]`: side-by-side measurements in one run, in Node on ONNX Runtime's WASM backend.
 *  - load: parse + analysis + surgery, and session creation, vs a session from the unmodified file;
 *    peak RSS of each, each in a fresh process;
 *  - decode speed: greedy tokens/s of the unmodified graph, the instrumented graph at zero steering, and
 *    the instrumented graph with one layer steered; the ratio instrumented/unmodified (target ≥ 0.97);
 *  - k = 1, 2, 4, 8 strengths as rows of one batch vs k separate runs (target: 4 rows ≤ 1.6× one row);
 *  - hidden-state capture throughput, batched vs one prompt at a time.
 * Prints a table and writes .reports/bench.json. Never fails on a slow machine.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openCheckPair } from '../src/engine/check.ts';
import { openSession, prepareGraph } from '../src/engine/load.ts';
import { externalDataFiles, parseModel } from '../src/engine/onnx/model.ts';
import { createSession } from '../src/engine/runtime.ts';
import { captureHiddenStates } from '../src/engine/hidden-states.ts';
import { createRng } from '../src/engine/sampling.ts';
import type { SteerableModel, SteeringRow } from '../src/engine/steerable-model.ts';
import { SHARED, sharedGraphPath } from '../tests/support/paths.ts';

type ModelName = keyof typeof SHARED;
const quick = process.argv.includes('--quick');
const steps = quick ? 16 : 128;
const repeats = quick ? 1 : 5;

function readGraph(name: ModelName) {
  const file = sharedGraphPath(name);
  const readExternal = async (location: string) => new Uint8Array(readFileSync(path.join(path.dirname(file), location)));
  return { file, bytes: new Uint8Array(readFileSync(file)), readExternal };
}

/** Child mode: load once, print timings and this process's peak RSS. */
async function loadChild(name: ModelName, instrumented: boolean) {
  const { file, bytes, readExternal } = readGraph(name);
  const started = performance.now();
  if (instrumented) {
    const prepared = await prepareGraph(bytes, path.basename(file), readExternal);
    const surgeryMs = performance.now() - started;
    await openSession(prepared, 'wasm');
    // What the engine hands ONNX Runtime: the new graph plus buffers it already had (no copy of the weights).
    const handedMb = (prepared.graph.length + prepared.externalData.reduce((sum, entry) => sum + entry.data.length, 0)) / 1e6;
    return { surgeryMs, totalMs: performance.now() - started, peakRssMb: process.resourceUsage().maxRSS / 1024, handedMb };
  }
  const external = [];
  for (const location of externalDataFiles(parseModel(bytes, file))) external.push({ path: location, data: await readExternal(location) });
  const afterPrepare = performance.now();
  await createSession({ graph: bytes, externalData: external }, 'wasm', []);
  const handedMb = (bytes.length + external.reduce((sum, entry) => sum + entry.data.length, 0)) / 1e6;
  return { surgeryMs: 0, totalMs: performance.now() - afterPrepare, peakRssMb: process.resourceUsage().maxRSS / 1024, handedMb };
}

/** Decode steps per second (each step one token per row) after a short prompt, every row with its steering. */
async function decodeStepsPerSecond(model: SteerableModel, rows: SteeringRow[] | undefined): Promise<number> {
  const prompt = Array.from({ length: 8 }, (_, i) => 10 + i);
  const batch = rows?.length ?? 1;
  let result = await model.forward({ tokens: Array.from({ length: batch }, () => prompt), steering: rows, keepCache: true });
  const started = performance.now();
  for (let step = 0; step < steps; step++) {
    const logits = result.logits!;
    const vocab = logits.length / batch;
    const next = Array.from({ length: batch }, (_, row) => {
      let best = row * vocab;
      for (let i = best + 1; i < (row + 1) * vocab; i++) if (logits[i] > logits[best]) best = i;
      return [best - row * vocab];
    });
    result = await model.forward({ tokens: next, past: result.cache, steering: rows, keepCache: true });
  }
  model.releaseCache(result.cache);
  return (steps * 1000) / (performance.now() - started);
}

/** Prompts per second through hidden-state capture at every layer, in batches of `batchSize`. */
async function capturePromptsPerSecond(model: SteerableModel, prompts: number[][], batchSize: number): Promise<number> {
  const layers = model.analysis.layers.map((site) => site.layer);
  const started = performance.now();
  await captureHiddenStates(model, { prompts, layers, reduce: 'mean', batchSize });
  return (prompts.length * 1000) / (performance.now() - started);
}

async function benchModel(name: ModelName) {
  const script = process.argv[1];
  const child = (mode: string) =>
    JSON.parse(execFileSync(process.execPath, [...process.execArgv, script, '--child', name, mode], { encoding: 'utf8' }).trim().split('\n').pop()!);
  const loadPlain = child('plain');
  const loadInstrumented = child('instrumented');

  const { bytes, readExternal, file } = readGraph(name);
  const { original, instrumented, analysis } = await openCheckPair(bytes, path.basename(file), readExternal, 'wasm');
  const layer = Math.floor(analysis.layerCount / 2);
  const vector = Float32Array.from({ length: analysis.hiddenSize }, (_, i) => Math.sin(i) * 0.5);
  // Rounds interleave the three variants so drift on a shared machine hits them alike; best round counts.
  const variants = {
    plain: () => decodeStepsPerSecond(original, undefined),
    zero: () => decodeStepsPerSecond(instrumented, undefined),
    steered: () => decodeStepsPerSecond(instrumented, [[{ layer, vector }]]),
  };
  const best = { plain: 0, zero: 0, steered: 0 };
  for (let round = 0; round < repeats; round++) {
    for (const [variant, run] of Object.entries(variants) as [keyof typeof best, () => Promise<number>][]) {
      best[variant] = Math.max(best[variant], await run());
    }
  }
  const [plainTps, zeroTps, steeredTps] = [best.plain, best.zero, best.steered];

  // k strengths in one batch vs k separate runs: time of k rows relative to one row.
  const batched: { rows: number; stepsPerSecond: number; timeVsOneRow: number; speedupVsSeparateRuns: number }[] = [];
  for (const rows of [1, 2, 4, 8]) {
    const strengths = Array.from({ length: rows }, (_, i) => [{ layer, vector: vector.map((v) => v * i) }]);
    let bestRate = 0;
    for (let round = 0; round < repeats; round++) bestRate = Math.max(bestRate, await decodeStepsPerSecond(instrumented, strengths));
    const oneRow = batched[0]?.stepsPerSecond ?? bestRate;
    batched.push({ rows, stepsPerSecond: bestRate, timeVsOneRow: oneRow / bestRate, speedupVsSeparateRuns: (rows * bestRate) / oneRow });
  }

  // Extraction throughput: 32 prompts of 8–24 tokens, batched (16) vs one at a time.
  const random = createRng(7);
  const vocab = instrumented.vocabSize;
  const prompts = Array.from({ length: 32 }, () => Array.from({ length: 8 + Math.floor(random() * 17) }, () => Math.floor(random() * vocab)));
  let capture = { batched: 0, single: 0 };
  for (let round = 0; round < repeats; round++) {
    capture = {
      batched: Math.max(capture.batched, await capturePromptsPerSecond(instrumented, prompts, 16)),
      single: Math.max(capture.single, await capturePromptsPerSecond(instrumented, prompts, 1)),
    };
  }
  await original.dispose();
  await instrumented.dispose();
  return {
    model: SHARED[name].folder,
    layers: analysis.layerCount,
    load: { plain: loadPlain, instrumented: loadInstrumented },
    tokensPerSecond: { unmodified: plainTps, instrumentedZero: zeroTps, instrumentedSteered: steeredTps },
    steeredLayer: layer,
    steeringOverheadRatio: steeredTps / plainTps,
    batchedStrengths: batched,
    capturePromptsPerSecond: { ...capture, ratio: capture.batched / capture.single },
  };
}

async function main() {
  const childIndex = process.argv.indexOf('--child');
  if (childIndex >= 0) {
    const [name, mode] = process.argv.slice(childIndex + 1) as [ModelName, string];
    console.log(JSON.stringify(await loadChild(name, mode === 'instrumented')));
    return;
  }
  const results = [];
  for (const name of ['stories', 'builder'] as ModelName[]) results.push(await benchModel(name));
  const machine = `${os.cpus()[0]?.model ?? 'cpu'} × ${os.cpus().length}, Node ${process.version}`;
  console.log(`\nTiller bench (${quick ? 'quick' : 'full'}): Node, WASM backend, ${machine}; ${steps} greedy decode steps, best of ${repeats}`);
  console.log('model                           | load plain ms | load+surgery ms (surgery) | MB to ORT plain / instr. | peak RSS MB plain / instr. | tok/s plain | zero | steered | ratio (target ≥ 0.97)');
  for (const r of results) {
    console.log(
      `${r.model.padEnd(31)} | ${r.load.plain.totalMs.toFixed(0).padStart(13)} | ${`${r.load.instrumented.totalMs.toFixed(0)} (${r.load.instrumented.surgeryMs.toFixed(1)})`.padStart(25)} | ` +
        `${`${r.load.plain.handedMb.toFixed(2)} / ${r.load.instrumented.handedMb.toFixed(2)}`.padStart(24)} | ` +
        `${`${r.load.plain.peakRssMb.toFixed(0)} / ${r.load.instrumented.peakRssMb.toFixed(0)}`.padStart(26)} | ` +
        `${r.tokensPerSecond.unmodified.toFixed(0).padStart(11)} | ${r.tokensPerSecond.instrumentedZero.toFixed(0).padStart(4)} | ` +
        `${r.tokensPerSecond.instrumentedSteered.toFixed(0).padStart(7)} | ${r.steeringOverheadRatio.toFixed(3)} ${r.steeringOverheadRatio >= 0.97 ? 'met' : 'NOT met'}`,
    );
  }
  console.log('\nbatched strengths (k rows in one batch): time of k rows / time of 1 row (target for 4 rows ≤ 1.6), speed-up vs k separate runs');
  for (const r of results) {
    console.log(`${r.model.padEnd(31)} | ${r.batchedStrengths.map((b) => `k=${b.rows}: ${b.timeVsOneRow.toFixed(2)}× time, ${b.speedupVsSeparateRuns.toFixed(2)}× faster`).join(' | ')}` +
      ` | 4 rows ${r.batchedStrengths[2].timeVsOneRow <= 1.6 ? 'met' : 'NOT met'}`);
  }
  console.log('\nhidden-state capture, 32 prompts of 8–24 tokens, all layers: prompts/s batched (16) vs one at a time');
  for (const r of results) {
    const c = r.capturePromptsPerSecond;
    console.log(`${r.model.padEnd(31)} | ${c.batched.toFixed(0)} vs ${c.single.toFixed(0)} prompts/s: ${c.ratio.toFixed(2)}×`);
  }
  mkdirSync('.reports', { recursive: true });
  writeFileSync('.reports/bench.json', JSON.stringify({ date: new Date().toISOString(), machine, quick, steps, repeats, results }, null, 2));
  console.log('Peak RSS is mostly the ONNX Runtime WASM module and its threads, not the model; "MB to ORT" is what the engine hands over (graph + buffers it already held).');
  console.log('wrote .reports/bench.json');
}

await main();
