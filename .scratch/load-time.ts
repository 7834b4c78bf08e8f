// Load time vs self-check time on the 135M synthetic models (both flavours), in fresh-ish runs.
import path from 'node:path';
import { loadModel } from '../src/engine/model/load.ts';
import { FolderSource } from '../src/engine/sources/node-folder.ts';
import { SMOLLM2_135M, writeSyntheticModel } from '../tests/support/synthetic-decoder.ts';
const flavour = process.argv[2] as 'torch' | 'builder';
const folder = writeSyntheticModel(path.resolve('.cache/bench-models', `smollm2-135m-shape-${flavour}`), SMOLLM2_135M, flavour);
const started = performance.now();
const model = await loadModel(new FolderSource(folder), { backend: 'wasm', dtype: flavour === 'builder' ? 'fp16' : 'fp32' });
const total = performance.now() - started;
console.log(JSON.stringify({ flavour, loadMs: Math.round(total), selfCheckMs: Math.round(model.selfCheck!.milliseconds), share: (model.selfCheck!.milliseconds / total).toFixed(3), ok: model.selfCheck!.ok, message: model.selfCheck!.message }));
await model.dispose();
