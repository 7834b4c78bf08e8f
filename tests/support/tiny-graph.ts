import { TensorType } from '../../src/engine/onnx/model.ts';
import { ProtoWriter } from '../../src/engine/onnx/proto.ts';

/** A one-layer "decoder" with no residual stream: Gather → MatMul → logits, plus KV pass-through. */
export function tinyGraph({ withPast = true } = {}): Uint8Array {
  const valueInfo = (w: ProtoWriter, name: string, elemType: number) =>
    w.string(1, name).message(2, (t) => t.message(1, (tt) => tt.int(1, elemType)));
  const graph = new ProtoWriter();
  const node = (op: string, inputs: string[], outputs: string[]) =>
    graph.message(1, (n) => {
      inputs.forEach((i) => n.string(1, i));
      outputs.forEach((o) => n.string(2, o));
      n.string(4, op);
    });
  node('Gather', ['embed', 'input_ids'], ['embedded']);
  node('MatMul', ['embedded', 'head'], ['logits']);
  if (withPast) {
    node('Identity', ['past_key_values.0.key'], ['present.0.key']);
    node('Identity', ['past_key_values.0.value'], ['present.0.value']);
  }
  const tensor = (name: string, dims: number[]) =>
    graph.message(5, (t) => {
      dims.forEach((d) => t.int(1, d));
      t.int(2, TensorType.FLOAT).string(8, name).bytes(9, new Uint8Array(4 * dims[0] * dims[1]));
    });
  tensor('embed', [10, 4]);
  tensor('head', [4, 10]);
  graph.message(11, (w) => valueInfo(w, 'input_ids', TensorType.INT64));
  if (withPast) {
    graph.message(11, (w) => valueInfo(w, 'past_key_values.0.key', TensorType.FLOAT));
    graph.message(11, (w) => valueInfo(w, 'past_key_values.0.value', TensorType.FLOAT));
  }
  graph.message(12, (w) => valueInfo(w, 'logits', TensorType.FLOAT));
  if (withPast) {
    graph.message(12, (w) => valueInfo(w, 'present.0.key', TensorType.FLOAT));
    graph.message(12, (w) => valueInfo(w, 'present.0.value', TensorType.FLOAT));
  }
  return new ProtoWriter().int(1, 8).bytes(7, graph.finish()).message(8, (o) => o.string(1, '').int(2, 17)).finish();
}
