import { chooseToken, createRng } from '../src/engine/generation/sampling.ts';
import { chooseToken as oldChoose } from './tmp-old-sampling.ts';
const r = createRng(5);
let diff = 0, n = 0;
for (let trial = 0; trial < 300; trial++) {
  const V = [10, 100, 5000][trial % 3];
  const flat = trial % 2 === 0;
  const logits = Float32Array.from({ length: V }, () => Math.round((flat ? r() * 0.5 : r() * 20) * (trial % 5 === 0 ? 4 : 1000)) / (trial % 5 === 0 ? 4 : 1000));
  for (const topP of [0.5, 0.9, 0.95, 0.999]) for (const T of [0.3, 0.8, 1.5]) {
    const a = chooseToken(logits, [], { temperature: T, topP }, createRng(trial * 7 + 1));
    const b = oldChoose(logits, [], { temperature: T, topP }, createRng(trial * 7 + 1));
    n++; if (a !== b) diff++;
  }
}
console.log('differ', diff, 'of', n);
