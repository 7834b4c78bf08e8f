import { loadShared } from '../tests/support/models.ts';
const model = await loadShared('stories');
const enc = (t: string) => model.tokenizer!.encode(t);
const prompts = [enc('Lily was very'), enc('Tom went to the park with his big red ball and'), enc('Once')];
const width = Math.max(...prompts.map((p) => p.length));
const pad = prompts.map((p) => width - p.length);
const padded = await model.forward({ tokens: prompts.map((p) => [...new Array(width - p.length).fill(p[0]), ...p]), leftPadding: pad, logits: 'all', hiddenLayers: [0] });
const V = model.vocabSize;
for (const [row, ids] of prompts.entries()) {
  const alone = await model.forward({ tokens: [ids], logits: 'all', hiddenLayers: [0] });
  for (let p = 0; p < ids.length; p++) {
    let worst = 0;
    for (let i = 0; i < V; i++) worst = Math.max(worst, Math.abs(padded.logits![(row * width + pad[row] + p) * V + i] - alone.logits![p * V + i]));
    console.log(row, p, worst.toExponential(2));
  }
}
