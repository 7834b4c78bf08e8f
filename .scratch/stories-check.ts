import { loadModel } from '../src/engine/model/load.ts';
import { FolderSource } from '../src/engine/sources/node-folder.ts';
for (let i = 0; i < 2; i++) {
  const t = performance.now();
  const model = await loadModel(new FolderSource('/work/shared/models/stories260K-hf'), { backend: 'wasm' });
  console.log('load', Math.round(performance.now() - t), 'self-check', Math.round(model.selfCheck!.milliseconds), model.selfCheck!.message);
  await model.dispose();
}
