/**
 * Proof that the instrumented graph is the model it came from: on random tokens, zero steering
 * reproduces the unmodified graph's logits, and steering layer L by v moves layer L's residual by v.
 */
import { type PreparedGraph, openSession, prepareGraph } from './load.ts';
import type { AnalysisHints } from '../onnx/analysis.ts';
import type { FusionOptions } from '../onnx/fusion.ts';
import { TensorType } from '../onnx/model.ts';
import { EPSILON, maxAbs, maxAbsDiff, rms } from './self-check.ts';
import type { Backend } from './runtime.ts';
import { createRng } from '../generation/sampling.ts';
import { type ModelConfig, SteerableModel } from './steerable-model.ts';

export interface LayerCheck {
  layer: number;
  /** Largest |Δresidual − v| over positions and features. */
  maxError: number;
  tolerance: number;
  ok: boolean;
}

export interface CheckReport {
  tokens: number[];
  /** Largest |logit difference| between the unmodified and the instrumented graph at zero steering. */
  zeroSteeringMaxDiff: number;
  zeroSteeringTolerance: number;
  layers: LayerCheck[];
  ok: boolean;
}

/** Sessions for one .onnx file as published and as instrumented (and fused, with `fusion`, where attention or rotary
 *  matched), to compare with `checkSteering`. */
export async function openCheckPair(
  bytes: Uint8Array,
  fileName: string,
  readExternal: (location: string) => Promise<Uint8Array>,
  backend: Backend,
  config: ModelConfig = {},
  hints: AnalysisHints = {},
  fusion?: FusionOptions,
) {
  const prepared = await prepareGraph(bytes, fileName, readExternal, hints, false, fusion);
  const original: PreparedGraph = {
    ...prepared,
    graph: bytes,
    externalData: prepared.externalData.filter((entry) => entry.data !== bytes),
    instrumentation: { steeringInputs: new Map(), hiddenOutputs: new Map() },
  };
  const wrap = async (graph: PreparedGraph, bytes = graph.graph) =>
    new SteerableModel(fileName, fileName, await openSession(graph, backend, bytes), graph.analysis, graph.instrumentation, undefined, config, {}, backend);
  return {
    analysis: prepared.analysis,
    fused: prepared.fused?.applied ?? [],
    original: await wrap(original),
    instrumented: await wrap(prepared, prepared.fused?.graph),
    /** The instrumented graph without the fusions, on demand (the bench compares the two). */
    openUnfused: () => wrap(prepared),
  };
}

/** `original` wraps the unmodified graph (no steering inputs); `instrumented` the edited one. */
export async function checkSteering(original: SteerableModel, instrumented: SteerableModel, options: { seed?: number; tokens?: number } = {}): Promise<CheckReport> {
  const random = createRng(options.seed ?? 1234);
  const vocab = instrumented.vocabSize;
  const tokens = Array.from({ length: options.tokens ?? 8 }, () => Math.floor(random() * vocab));
  const layers = instrumented.analysis.layers.map((site) => site.layer);

  const reference = await original.forward({ tokens: [tokens], logits: 'all' });
  const plain = await instrumented.forward({ tokens: [tokens], logits: 'all', hiddenLayers: layers });
  const zeroSteeringMaxDiff = maxAbsDiff(reference.logits!, plain.logits!);
  const logitScale = maxAbs(reference.logits!);
  // Exposing residuals can change which fusions ONNX Runtime applies, and so the rounding order.
  const logitsType = instrumented.session.outputMetadata.find((m) => m.name === instrumented.analysis.logits);
  const logitsEpsilon = logitsType?.isTensor && logitsType.type === 'float16' ? EPSILON[TensorType.FLOAT16] : EPSILON[TensorType.FLOAT];
  const zeroSteeringTolerance = 64 * Math.max(logitsEpsilon, EPSILON[instrumented.analysis.residualType]) * Math.max(1, logitScale);

  const results: LayerCheck[] = [];
  for (const site of instrumented.analysis.layers) {
    const before = plain.hidden.get(site.layer)!;
    const scale = rms(before);
    const vector = Float32Array.from({ length: instrumented.analysis.hiddenSize }, () => (random() * 2 - 1) * scale);
    const steered = await instrumented.forward({
      tokens: [tokens],
      logits: 'none',
      hiddenLayers: [site.layer],
      steering: [[{ layer: site.layer, vector }]],
    });
    const after = steered.hidden.get(site.layer)!;
    let maxError = 0;
    for (let i = 0; i < after.length; i++) {
      maxError = Math.max(maxError, Math.abs(after[i] - before[i] - vector[i % vector.length]));
    }
    const tolerance = 8 * EPSILON[site.elemType] * (maxAbs(before) + maxAbs(vector));
    results.push({ layer: site.layer, maxError, tolerance, ok: maxError <= tolerance });
  }
  return {
    tokens,
    zeroSteeringMaxDiff,
    zeroSteeringTolerance,
    layers: results,
    ok: zeroSteeringMaxDiff <= zeroSteeringTolerance && results.every((r) => r.ok),
  };
}
