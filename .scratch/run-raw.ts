import * as ort from 'onnxruntime-web';
import { syntheticFamily, STRUCTURES, type Family } from '../tests/support/synthetic-decoder.ts';
ort.env.wasm.numThreads = 1;
const shape = { layers: 2, hidden: 32, heads: 4, kvHeads: 4, intermediate: 64, vocab: 64, maxPositions: 32 };
for (const family of Object.keys(STRUCTURES) as Family[]) {
  try {
    const m = syntheticFamily(shape, family);
    const s = await ort.InferenceSession.create(m.graph);
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor('int64', BigInt64Array.from([1n, 2n, 3n, 4n, 5n, 6n]), [2, 3]),
      attention_mask: new ort.Tensor('int64', BigInt64Array.from([1n, 1n, 1n, 1n, 1n, 1n]), [2, 3]),
    };
    if (s.inputNames.includes('position_ids')) feeds.position_ids = new ort.Tensor('int64', BigInt64Array.from([0n, 1n, 2n, 0n, 1n, 2n]), [2, 3]);
    for (let l = 0; l < 2; l++) for (const k of ['key', 'value']) feeds[`past_key_values.${l}.${k}`] = new ort.Tensor('float32', new Float32Array(0), [2, 4, 0, 8]);
    const out = await s.run(feeds);
    console.log(family, out.logits.dims, Array.from((out.logits.data as Float32Array).slice(0, 4)));
  } catch (e) { console.log(family, 'ERR', (e as Error).message.slice(0, 300)); }
}
