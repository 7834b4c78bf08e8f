/** Runs one model's measurements (scripts/bench-measure.ts) on one backend, in the page's worker. */
import * as Comlink from 'comlink';
import { openCheckPair } from '../../src/engine/model/check.ts';
import { ort, warmUpRuntime } from '../../src/engine/model/runtime.ts';
import type { ModelConfig } from '../../src/engine/model/steerable-model.ts';
import { fusionOptionsFor, loadModel } from '../../src/engine/model/load.ts';
import { FolderUrlSource } from '../../src/engine/sources/hub.ts';
import { type BenchModel, type BenchPlan, measureModel, measurePersonaExtraction } from '../bench-measure.ts';
import { transformersGenerator } from '../bench-transformers.ts';

export interface PageBenchRequest {
  model: BenchModel;
  backend: 'wasm' | 'webgpu';
  plan: BenchPlan;
}

async function read(url: string): Promise<Uint8Array> {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return new Uint8Array(await response.arrayBuffer());
}

async function run({ model, backend, plan }: PageBenchRequest) {
  const base = `/models/${model.folder}/`;
  const config = JSON.parse(new TextDecoder().decode(await read(`${base}config.json`))) as ModelConfig;
  // No EOS: every generation runs its full length, as Transformers.js does under min_new_tokens.
  delete config.eos_token_id;
  const folder = base + model.file.slice(0, model.file.lastIndexOf('/') + 1);
  // As the engine loads it: fused where attention, rotary or RMSNorm match (item 9 compares the unfused graph beside it).
  const { original, instrumented, analysis, fused, openUnfused } = await openCheckPair(
    await read(base + model.file), model.file.split('/').pop()!, (location) => read(folder + location), backend, config, {}, fusionOptionsFor(config));
  const unfused = fused.length > 0 && (!plan.only || plan.only.includes('fusion')) ? await openUnfused() : undefined;
  let theirs: Awaited<ReturnType<typeof transformersGenerator>> | undefined;
  try {
    if (!plan.only || plan.only.includes('againstTransformersJs')) {
      // Imported only now that ONNX Runtime is set up: it is the same module instance as the engine's.
      const transformers = await import('@huggingface/transformers');
      transformers.env.allowRemoteModels = false;
      transformers.env.allowLocalModels = true;
      transformers.env.localModelPath = '/models/';
      transformers.env.useBrowserCache = false;
      transformers.env.useWasmCache = false;
      const theirVersion = transformers.env.backends.onnx.versions?.web;
      if (theirVersion !== ort.env.versions.web) throw new Error(`Transformers.js runs ONNX Runtime Web ${theirVersion}, the engine ${ort.env.versions.web}`);
      theirs = await transformersGenerator(transformers, model.folder, { dtype: model.dtype, device: backend, externalData: model.externalData });
    }
    const measured = await measureModel(original, instrumented, plan, theirs, unfused && { model: unfused, applied: fused });
    return { layers: analysis.layerCount, ...measured, personaExtraction: backend === 'wasm' ? await personaExtraction(model, base) : undefined };
  } finally {
    await theirs?.dispose();
    await unfused?.dispose();
    await original.dispose();
    await instrumented.dispose();
  }
}

/** 6. Chat models only (a tokenizer with a chat template), on WASM: persona extraction, batched vs one question at a time. */
async function personaExtraction(model: BenchModel, base: string) {
  if (!(await fetch(`${base}tokenizer.json`)).ok) return undefined;
  const loaded = await loadModel(new FolderUrlSource(new URL(base, self.location.href).href), { backend: 'wasm', dtype: model.dtype });
  try {
    return loaded.tokenizer?.hasChatTemplate ? await measurePersonaExtraction(loaded) : undefined;
  } finally {
    await loaded.dispose();
  }
}

/**
 * 8. Load-to-ready in this fresh worker: the app's load of a model folder on WASM, either at once (ONNX
 * Runtime starts with the model's session) or after the runtime was started ahead, as the app's engine worker
 * does while the visitor reads the page.
 */
async function loadToReady(folder: string, warmUpFirst: boolean) {
  let warmUpMs: number | undefined;
  if (warmUpFirst) {
    const started = performance.now();
    const problem = await warmUpRuntime();
    if (problem) throw new Error(`warm-up failed: ${problem}`);
    warmUpMs = performance.now() - started;
  }
  const started = performance.now();
  const loaded = await loadModel(new FolderUrlSource(new URL(`/models/${folder}/`, self.location.href).href), { backend: 'wasm' });
  const loadMs = performance.now() - started;
  await loaded.dispose();
  return { warmUpMs, loadMs };
}

const api = { run, loadToReady };
export type BenchWorker = typeof api;
Comlink.expose(api);
