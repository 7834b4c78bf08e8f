/**
 * Small instruct models published for Transformers.js (ONNX exports on the Hugging Face Hub), as data.
 * Sizes are approximate downloads of the named variant; the Hub is not reachable from the tests, so these
 * entries are not exercised there.
 */
import type { Dtype } from '../engine/sources/variants.ts';

export interface CuratedModel {
  repo: string;
  label: string;
  /** Variants to ask for: the first that the backend can run is used. */
  dtypes: Dtype[];
  /** Approximate download per dtype, in MB. */
  sizeMb: Partial<Record<Dtype, number>>;
  /** Chat template variables the model needs (e.g. Qwen3's thinking switch). */
  chatContext?: Record<string, unknown>;
}

export const CURATED_MODELS: CuratedModel[] = [
  { repo: 'HuggingFaceTB/SmolLM2-135M-Instruct', label: 'SmolLM2 135M Instruct', dtypes: ['q4f16', 'q4', 'fp32'], sizeMb: { q4f16: 120, q4: 160, fp32: 540 } },
  { repo: 'HuggingFaceTB/SmolLM2-360M-Instruct', label: 'SmolLM2 360M Instruct', dtypes: ['q4f16', 'q4', 'fp32'], sizeMb: { q4f16: 260, q4: 370, fp32: 1450 } },
  { repo: 'onnx-community/gemma-3-270m-it-ONNX', label: 'Gemma 3 270M it', dtypes: ['q4f16', 'q4', 'fp32'], sizeMb: { q4f16: 390, q4: 420, fp32: 1140 } },
  { repo: 'onnx-community/Qwen2.5-0.5B-Instruct', label: 'Qwen2.5 0.5B Instruct', dtypes: ['q4f16', 'q4', 'fp32'], sizeMb: { q4f16: 480, q4: 790, fp32: 1980 } },
  { repo: 'onnx-community/Qwen3-0.6B-ONNX', label: 'Qwen3 0.6B', dtypes: ['q4f16', 'q4', 'fp32'], sizeMb: { q4f16: 570, q4: 920, fp32: 2400 }, chatContext: { enable_thinking: false } },
  { repo: 'onnx-community/Llama-3.2-1B-Instruct', label: 'Llama 3.2 1B Instruct', dtypes: ['q4f16', 'q4', 'fp32'], sizeMb: { q4f16: 1010, q4: 1250, fp32: 4900 } },
];

export function curatedModel(repo: string): CuratedModel | undefined {
  return CURATED_MODELS.find((m) => m.repo === repo);
}

/** The variant to request for a curated model on a backend: q4f16 only with fp16 shaders on WebGPU. */
export function curatedDtype(model: CuratedModel, backend: 'webgpu' | 'wasm', shaderF16: boolean): Dtype {
  const usable = model.dtypes.filter((d) => (backend === 'webgpu' && shaderF16) || (d !== 'q4f16' && d !== 'fp16'));
  return usable[0] ?? model.dtypes[0];
}
