import { loadShared } from '../tests/support/models.ts';
import { loadModel } from '../src/engine/model/load.ts';
import { FolderSource } from '../src/engine/sources/node-folder.ts';
for (const name of ['stories', 'builder'] as const) {
  const m = await loadShared(name);
  console.log(name, await m.canPadLeft());
}
const q = await loadModel(new FolderSource('../shared/models/tiny-random-qwen-gqa-decoder'), { backend: 'wasm' }).catch((e) => { console.log('qwen load', e.message); });
if (q) console.log('qwen', await q.canPadLeft());
