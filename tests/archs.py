"""Random-init small configs of several architectures, for tests against eager references."""
import torch
from transformers import (BertConfig, BertModel, Gemma3ForCausalLM, Gemma3TextConfig, GemmaConfig, GemmaForCausalLM,
                          GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, MistralConfig,
                          MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM)

COMMON = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              max_position_embeddings=256)


def build(arch: str, vocab_size: int):
    """A seeded random-init model of ``arch`` with 2 layers, 4 heads (GQA where the family has it)."""
    torch.manual_seed(0)
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(vocab_size=vocab_size, num_key_value_heads=2, **COMMON))
    elif arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(vocab_size=vocab_size, num_key_value_heads=2, **COMMON))
    elif arch == "mistral":
        model = MistralForCausalLM(MistralConfig(vocab_size=vocab_size, num_key_value_heads=1, sliding_window=8,
                                                 **COMMON))
    elif arch == "gemma":
        model = GemmaForCausalLM(GemmaConfig(vocab_size=vocab_size, num_key_value_heads=2, head_dim=16, **COMMON))
    elif arch == "gemma3":       # a sliding (window 8) and a global layer, two RoPE bases, query_pre_attn_scalar
        model = Gemma3ForCausalLM(Gemma3TextConfig(
            vocab_size=vocab_size, num_key_value_heads=1, head_dim=16, sliding_window=8, query_pre_attn_scalar=24,
            layer_types=["sliding_attention", "full_attention"],
            rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
                             "full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0}}, **COMMON))
    elif arch == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=vocab_size, n_embd=64, n_layer=2, n_head=4, n_positions=256))
    elif arch == "bert":
        model = BertModel(BertConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128,
                                     num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=256))
    else:
        raise KeyError(arch)
    model.set_attn_implementation("sdpa")
    return model.eval()


CAUSAL = ["llama", "qwen2", "mistral", "gemma", "gemma3", "gpt2"]
ALL = CAUSAL + ["bert"]
