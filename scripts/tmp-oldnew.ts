// Persona extraction on the 2-layer chat model: the code before issue 17 vs now, same process, same seed.
import { loadShared } from '../tests/support/models.ts';
import { extractDirections } from '../src/engine/directions/extract.ts';
import { contrastiveSetOf, presetById } from '../src/engine/directions/presets.ts';
import { loadShared as loadOld } from '../.cache/old/tests/support/models.ts';
import { extractDirections as extractOld } from '../.cache/old/src/engine/directions/extract.ts';
const set = contrastiveSetOf(presetById('misaligned-persona'));
const model = await loadShared('builder');
const old = await loadOld('builder');
const time = async (label: string, run: () => Promise<unknown>) => { const t = performance.now(); await run(); const s = (performance.now() - t) / 1000; console.log(label, s.toFixed(1), 's'); return s; };
const now = await time('now (batched)', () => extractDirections(model, set, { seed: 0 }));
const before = await time('before (issue 17)', () => extractOld(old as never, set, { seed: 0 }));
console.log('speed-up', (before / now).toFixed(2));
