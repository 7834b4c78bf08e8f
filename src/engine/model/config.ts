/**
 * config.json as the engine reads it: the decoder's own fields (multimodal configs nest them under
 * text_config), under the names Llama-style configs use. Families name the same sizes differently; this
 * table is the one place that knows.
 */
import type { ModelConfig } from './steerable-model.ts';

/** Canonical field ← the names other families give it (first one present wins). */
const ALIASES: Record<string, string[]> = {
  // GPT-2, GPT-J, CodeGen, GPT-BigCode: n_layer; MPT: n_layers; ChatGLM: num_layers.
  num_hidden_layers: ['n_layer', 'n_layers', 'num_layers'],
  // GPT-2 family: n_embd; MPT: d_model; BLOOM: n_embed.
  hidden_size: ['n_embd', 'd_model', 'n_embed'],
  num_attention_heads: ['n_head', 'n_heads', 'num_heads'],
  // Falcon: num_kv_heads; older Falcon: n_head_kv.
  num_key_value_heads: ['num_kv_heads', 'n_head_kv'],
  // GPT-2 family: n_positions (n_ctx in old configs); MPT: max_seq_len; ChatGLM: seq_length.
  max_position_embeddings: ['n_positions', 'n_ctx', 'max_seq_len', 'seq_length'],
  // GPT-2 family: n_inner; OPT: ffn_dim.
  intermediate_size: ['n_inner', 'ffn_dim'],
};

/** The decoder's config with canonical names filled in from each family's own ones. */
export function decoderConfigOf(config: Record<string, unknown>): ModelConfig {
  const text = config.text_config;
  const merged: ModelConfig = typeof text === 'object' && text !== null ? { ...config, ...(text as ModelConfig) } : { ...config };
  for (const [canonical, names] of Object.entries(ALIASES)) {
    if (typeof merged[canonical] === 'number') continue;
    const alias = names.find((name) => typeof merged[name] === 'number');
    if (alias) merged[canonical] = merged[alias];
  }
  return merged;
}
