import { readFileSync } from 'node:fs';
import { parseModel } from '../src/engine/onnx/model.ts';
const g = parseModel(new Uint8Array(readFileSync(process.argv[2]))).graph;
const start = process.argv[3];
const seen = new Set<string>([start]);
let frontier = [start];
for (let depth = 0; depth < Number(process.argv[4] ?? 8); depth++) {
  const next: string[] = [];
  for (const n of g.nodes) if (n.inputs.some((i) => frontier.includes(i))) {
    console.log(depth, n.opType, n.name, n.inputs.join(','), '->', n.outputs.join(','));
    for (const o of n.outputs) if (!seen.has(o)) { seen.add(o); next.push(o); }
  }
  frontier = next;
}
