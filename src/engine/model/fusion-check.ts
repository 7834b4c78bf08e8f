/**
 * The check that makes fusion safe to run by default: the fused graph must give the logits of the graph
 * as published, on a prefill of two rows (one left-padded, so the mask's zeros are exercised) and a decode
 * step that reads the KV cache the prefill wrote.
 */
import { TensorType } from '../onnx/model.ts';
import { maxAbs } from './self-check.ts';
import type { SteerableModel } from './steerable-model.ts';

/** Last-position logits `[2, vocab]` of the prefill and of the decode step after it. */
export type FusionProbe = { prefill: Float32Array; decode: Float32Array; elemType: number };

const PADDING = 3;

export async function probeLogits(model: SteerableModel): Promise<FusionProbe> {
  const ids = Array.from({ length: 6 }, (_, i) => (1 + 7 * i) % model.vocabSize);
  // Without an attention mask there is no padding to exercise: the second row is the first one shifted.
  const padding = model.analysis.attentionMask ? PADDING : 0;
  const short = [...new Array<number>(padding).fill(ids[0]), ...ids.slice(padding)];
  const prefill = await model.forward({ tokens: [short, ids], leftPadding: [padding, 0], keepCache: true });
  const next = ids.slice(-2).map((id) => [id]);
  const decode = await model.forward({ tokens: next, past: prefill.cache });
  return { prefill: prefill.logits!, decode: decode.logits!, elemType: model.analysis.residualType };
}

/** Largest allowed difference relative to the logits' scale: fused kernels sum in another order (fp32 graphs
 *  measured 0 to 1e-6 relative), a wrong fusion moves logits by tenths. */
const RELATIVE_TOLERANCE: Record<number, number> = { [TensorType.FLOAT]: 1e-4, [TensorType.FLOAT16]: 2e-2 };

/** Within rounding of the logits' own scale. NaN matches only NaN. */
export function compareProbes(reference: FusionProbe, fused: FusionProbe): { ok: boolean; error: number; tolerance: number } {
  const relative = RELATIVE_TOLERANCE[reference.elemType] ?? RELATIVE_TOLERANCE[TensorType.FLOAT];
  let error = 0;
  let tolerance = 0;
  for (const part of ['prefill', 'decode'] as const) {
    const a = reference[part];
    const b = fused[part];
    if (a.length !== b.length) return { ok: false, error: Infinity, tolerance: 0 };
    tolerance = Math.max(tolerance, relative * Math.max(1, maxAbs(a)));
    for (let i = 0; i < a.length; i++) {
      const difference = Number.isNaN(a[i]) && Number.isNaN(b[i]) ? 0 : Math.abs(a[i] - b[i]);
      error = Number.isNaN(difference) ? Infinity : Math.max(error, difference);
    }
  }
  return { ok: error <= tolerance, error, tolerance };
}
