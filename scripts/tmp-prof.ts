import { loadShared } from '../tests/support/models.ts';
import { generate } from '../src/engine/generation/generate.ts';
import { chooseToken, createRng } from '../src/engine/generation/sampling.ts';
const model = await loadShared('builder');
const ids = model.tokenizer!.encode('Hello there, how are you today?');
for (const temperature of [0, 0.8]) {
  const t = performance.now();
  const r = await generate(model, { rowPromptIds: new Array(32).fill(ids), maxNewTokens: 16, sampling: { temperature, topP: 0.95 } });
  console.log('T', temperature, (performance.now() - t).toFixed(0), 'ms', r.prefillMs.toFixed(0));
}
const logits = (await model.forward({ tokens: [ids] })).logits!;
const rng = createRng(1);
let t = performance.now();
for (let i = 0; i < 20; i++) chooseToken(logits, ids, { temperature: 0.8, topP: 0.95 }, rng);
console.log('choose ms', ((performance.now() - t) / 20).toFixed(2));
t = performance.now();
for (let i = 0; i < 20; i++) chooseToken(logits, ids, { temperature: 0.8 }, rng);
console.log('choose no topP ms', ((performance.now() - t) / 20).toFixed(2));
