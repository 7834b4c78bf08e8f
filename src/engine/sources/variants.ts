/**
 * Which ONNX file a dtype names, following Transformers.js: `onnx/{baseName}{suffix}.onnx` with the suffixes
 * of DEFAULT_DTYPE_SUFFIX_MAPPING in packages/transformers/src/utils/dtypes.js. (Transformers.js also knows
 * q2, q1, q2f16 and q1f16; ONNX Runtime Web has no fast path for them, so they are left out here.)
 */
import { ModelFileError } from './source.ts';

export type Dtype = 'fp32' | 'fp16' | 'q8' | 'int8' | 'uint8' | 'q4' | 'q4f16' | 'bnb4';

const SUFFIX: Record<Dtype, string> = {
  fp32: '',
  fp16: '_fp16',
  q8: '_quantized',
  int8: '_int8',
  uint8: '_uint8',
  q4: '_q4',
  q4f16: '_q4f16',
  bnb4: '_bnb4',
};

export const DTYPES = Object.keys(SUFFIX) as Dtype[];

/**
 * fp32 first: exact, an fp32 residual, and it runs on every WebGPU adapter. Then q4 (4-bit weights, fp32
 * activations), then the fp16 variants (need shader-f16, and steering must clamp to the fp16 range), and
 * last the 8-bit and bnb4 ones, which have no WebGPU kernels.
 */
export const DEFAULT_DTYPE_PREFERENCE: readonly Dtype[] = ['fp32', 'q4', 'fp16', 'q4f16', 'q8', 'uint8', 'int8', 'bnb4'];

/** fp16 activations: WebGPU runs them only with the shader-f16 feature, and returns zeros without it. */
export const needsShaderF16 = (dtype: Dtype): boolean => dtype === 'fp16' || dtype === 'q4f16';

/** What to load for a backend: q4f16 where WebGPU has fp16 shaders, never an fp16 variant where it has not. */
export function dtypePreference(backend: 'webgpu' | 'wasm', shaderF16: boolean): readonly Dtype[] {
  if (backend === 'wasm') return DEFAULT_DTYPE_PREFERENCE;
  return shaderF16 ? ['q4f16', 'fp16', 'q4', 'fp32', 'q8', 'uint8', 'int8', 'bnb4'] : DEFAULT_DTYPE_PREFERENCE.filter((d) => !needsShaderF16(d));
}

const isDtype = (value: unknown): value is Dtype => typeof value === 'string' && Object.hasOwn(SUFFIX, value);

export function onnxFileForDtype(dtype: Dtype, baseName = 'model'): string {
  return `onnx/${baseName}${SUFFIX[dtype]}.onnx`;
}

export function parseDtype(text: string): Dtype {
  const dtype = text.trim().toLowerCase();
  if (isDtype(dtype)) return dtype;
  throw new Error(`unknown dtype "${text}": use one of ${DTYPES.join(', ')}`);
}

/**
 * `transformers.js_config.dtype` of config.json: one dtype, or one per file base name ({ model: 'q4f16' }).
 * "auto" and dtypes this engine does not load are ignored, as Transformers.js falls back to its default.
 */
function configDtype(config: unknown, baseName: string): Dtype | undefined {
  const custom = (config as { 'transformers.js_config'?: { dtype?: unknown } } | undefined)?.['transformers.js_config'];
  const dtype = custom?.dtype;
  const chosen = typeof dtype === 'object' && dtype !== null ? (dtype as Record<string, unknown>)[baseName] : dtype;
  return isDtype(chosen) ? chosen : undefined;
}

/**
 * The dtype to load. `available` lists the files under onnx/ (names, or paths starting with onnx/), or is
 * undefined when the source cannot list (the Hub): then the config's dtype, else the first preference.
 * A config dtype whose file was not downloaded, or that is not among the preferences (an fp16 variant on a
 * GPU without shader-f16), yields to the preferences among the files that exist.
 */
export function pickDtype(available: string[] | undefined, config: unknown, preferred: readonly Dtype[] = DEFAULT_DTYPE_PREFERENCE): Dtype {
  const baseName = 'model';
  const fromConfig = configDtype(config, baseName);
  const acceptable = fromConfig && preferred.includes(fromConfig) ? fromConfig : undefined;
  if (!available) return acceptable ?? preferred[0] ?? 'fp32';

  const names = new Set(available.map((name) => name.replace(/^onnx\//, '')));
  const has = (dtype: Dtype) => names.has(onnxFileForDtype(dtype, baseName).slice('onnx/'.length));
  if (acceptable && has(acceptable)) return acceptable;
  const found = preferred.find(has);
  if (found) return found;

  const wanted = onnxFileForDtype(fromConfig ?? preferred[0] ?? 'fp32', baseName);
  const present = DTYPES.filter(has);
  if (present.length > 0) {
    throw new ModelFileError('missing', wanted,
      `onnx/ has only ${present.map((d) => `${d} (${onnxFileForDtype(d, baseName)})`).join(', ')}, none of ${preferred.join(', ')}: ` +
        `choose one of the dtypes it has, or add the variant you want`);
  }
  const graphs = [...names].filter((name) => name.endsWith('.onnx'));
  throw new ModelFileError('missing', wanted,
    `no Transformers.js model graph under onnx/ (${graphs.length ? `found ${graphs.join(', ')}` : 'no .onnx files there'}): ` +
      `expected onnx/${baseName}.onnx or onnx/${baseName}_<suffix>.onnx such as ${baseName}_q4f16.onnx; download the repository's onnx/ folder`);
}
