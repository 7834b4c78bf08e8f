import { loadShared } from './tests/support/models.ts';
import { generate } from './src/engine/generate.ts';
const m = await loadShared('stories');
for (const t of ['The cat sat on the mat', 'Lily was very happy', 'Tom had a big dog and', 'A girl ran', 'The dog ran to the park', 'Tom was very angry', 'Sam liked to eat cake']) console.log(t, m.tokenizer!.encode(t).length);
for (const seed of [1,2,3]) { const r = await generate(m, { prompt: '', maxNewTokens: 400, sampling: { temperature: 1, seed } }); console.log(seed, r.rows[0].finishReason, r.rows[0].tokenIds.length); }
const g = await generate(m, { prompt: '', maxNewTokens: 120 }); console.log(JSON.stringify(g.rows[0].text));
