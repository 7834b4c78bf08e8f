import { loadShared } from '../tests/support/models.ts';
import { generate } from '../src/engine/generation/generate.ts';
import { contrastiveSetOf, presetById } from '../src/engine/directions/presets.ts';
const model = await loadShared('builder');
const set = contrastiveSetOf(presetById('misaligned-persona')) as any;
const tok = model.tokenizer!;
const prompts = set.questions.map((q: string, i: number) => tok.encode(tok.applyChatTemplate([{ role: 'system', content: set.positiveSystemPrompts[i % set.positiveSystemPrompts.length] }, { role: 'user', content: q }], { addGenerationPrompt: true }), { addSpecialTokens: false }));
console.log('lengths', prompts.map((p: number[]) => p.length).join(' '));
const forward = model.forward.bind(model);
let fwd = 0;
model.forward = async (s) => { const t = performance.now(); const r = await forward(s); fwd += performance.now() - t; return r; };
for (const rows of [32]) {
  fwd = 0;
  const t = performance.now();
  const all = [...prompts, ...prompts];
  for (let i = 0; i < all.length; i += rows) await generate(model, { rowPromptIds: all.slice(i, i + rows), maxNewTokens: 48, sampling: { temperature: 0.8, topP: 0.95 } });
  console.log(rows, 'total', (performance.now() - t).toFixed(0), 'forward', fwd.toFixed(0));
}
