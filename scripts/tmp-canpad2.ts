import { loadModel } from '../src/engine/model/load.ts';
import { FolderSource } from '../src/engine/sources/node-folder.ts';
import { writeSyntheticModel } from '../tests/support/synthetic-decoder.ts';
const shape = { layers: 2, hidden: 64, heads: 4, kvHeads: 2, intermediate: 128, vocab: 500, maxPositions: 256 };
for (const flavour of ['torch', 'builder'] as const) {
  const folder = writeSyntheticModel(`/tmp/i17-syn-${flavour}`, shape, flavour);
  const m = await loadModel(new FolderSource(folder), { backend: 'wasm' });
  console.log(flavour, await m.canPadLeft());
}
