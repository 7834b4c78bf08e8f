/**
 * Transformers.js `generate()` on a local model folder, for the comparison in `npm run bench`. The caller
 * imports `@huggingface/transformers` and points its `env` at the models (a folder in Node, a URL in the
 * page) only after the engine has created a session, so both run on the same, already initialised ONNX
 * Runtime Web: Transformers.js would otherwise aim its WASM paths at a CDN, which is unreachable here.
 */
import type * as Transformers from '@huggingface/transformers';
import { type BenchModel, type TransformersModel, timeSessionRuns } from './bench-measure.ts';

export interface TransformersModelOptions {
  dtype: BenchModel['dtype'];
  /** 'auto' with explicit execution providers where Transformers.js was handed ONNX Runtime Web in Node. */
  device: 'wasm' | 'webgpu' | 'auto';
  executionProviders?: ('wasm' | 'webgpu')[];
  /** Weights beside the graph (path within the model folder), read by Transformers.js itself. */
  externalData?: { name: string; path: string };
}

export async function transformersGenerator(transformers: typeof Transformers, modelId: string, options: TransformersModelOptions): Promise<TransformersModel & { dispose(): Promise<unknown> }> {
  const { AutoModelForCausalLM, Tensor } = transformers;
  const model = await AutoModelForCausalLM.from_pretrained(modelId, {
    dtype: options.dtype,
    device: options.device,
    // Handing the data file over explicitly works alike in Node (where it would otherwise pass a file path that
    // only onnxruntime-node can open) and in the page.
    use_external_data_format: false,
    session_options: {
      ...(options.executionProviders ? { executionProviders: options.executionProviders } : {}),
      ...(options.externalData ? { externalData: [{ path: options.externalData.name, data: options.externalData.path }] } : {}),
    },
  });
  const runs = { ms: 0 };
  for (const session of Object.values(model.sessions)) timeSessionRuns(session as { run: () => Promise<unknown> }, runs);
  const generate: TransformersModel['generate'] = async (promptIds, newTokens) => {
    const dims = [1, promptIds.length];
    const output = (await model.generate({
      input_ids: new Tensor('int64', BigInt64Array.from(promptIds, BigInt), dims),
      attention_mask: new Tensor('int64', new BigInt64Array(promptIds.length).fill(1n), dims),
      max_new_tokens: newTokens,
      // Same count as our loop: EOS may not end it early.
      min_new_tokens: newTokens,
      do_sample: false,
    })) as Transformers.Tensor;
    return Array.from(output.data as BigInt64Array, Number).slice(promptIds.length);
  };
  return { generate, runs, dispose: () => model.dispose() };
}
