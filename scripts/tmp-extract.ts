import { loadShared } from '../tests/support/models.ts';
import { extractDirections } from '../src/engine/directions/extract.ts';
import { contrastiveSetOf, presetById } from '../src/engine/directions/presets.ts';
const model = await loadShared('builder');
const set = contrastiveSetOf(presetById('misaligned-persona'));
console.log(set.kind === 'persona' && set.questions.length, JSON.stringify(set).length);
for (const answerRows of [32, 2]) {
  const t = performance.now();
  let last = 0;
  const r = await extractDirections(model, set, { answerRows }, { onProgress: (stage, d, total) => { if (stage === 'capturing' && last === 0) { last = performance.now(); console.log('answering', (last - t).toFixed(0)); } } });
  console.log(answerRows, (performance.now() - t).toFixed(0), 'ms', r.positiveCount);
}
