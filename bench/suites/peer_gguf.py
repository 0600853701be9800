#!/usr/bin/python3
"""bench/suites/peer_gguf.py — writes a loom-mkmodel LLaMA folder and its PEFT
adapters as GGUF files for llama.cpp's llama-server, with the same weights, so
the peer benchmark compares the two servers on one model.

Usage: peer_gguf.py GGUF_PY_DIR MODEL_DIR OUT.gguf [ADAPTER_DIR OUT_ADAPTER.gguf ...]

Needs numpy (Debian python3-numpy) and llama.cpp's gguf-py (GGUF_PY_DIR, from
the llama.cpp checkout the suite builds). Weights keep their dtype (F16/F32;
BF16 is widened to F32). q_proj/k_proj rows (and the B matrices of adapters
on them) are permuted from Hugging Face's rotate-half RoPE layout to GGML's
interleaved one, as llama.cpp's converter does. The tokenizer (loom-mkmodel's
SentencePiece-style BPE) becomes a "llama" vocabulary; the benchmark sends
token ids, so only its size and special ids matter (byte pieces are written as
normal pieces, so llama-server's output text is always valid UTF-8).
"""
import json
import struct
import sys

import numpy as np


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        head = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, t in head.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        raw = data[a:b]
        dt = t["dtype"]
        if dt == "F32":
            arr = np.frombuffer(raw, dtype=np.float32)
        elif dt == "F16":
            arr = np.frombuffer(raw, dtype=np.float16)
        elif dt == "BF16":
            arr = (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            raise SystemExit(f"{path}: tensor {name}: dtype {dt} not handled")
        out[name] = arr.reshape(t["shape"])
    return out


def rope_permute(w, n_head):
    """Hugging Face rotate-half rows -> GGML interleaved pairs (per head)."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def write_model(gguf, model_dir, out):
    cfg = json.load(open(f"{model_dir}/config.json"))
    tok = json.load(open(f"{model_dir}/tokenizer.json"))
    t = read_safetensors(f"{model_dir}/model.safetensors")
    nh, nkv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    d = cfg["hidden_size"]
    w = gguf.GGUFWriter(out, "llama")
    w.add_name("loom-peer-bench")
    w.add_context_length(cfg.get("max_position_embeddings", 2048))
    w.add_embedding_length(d)
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(nh)
    w.add_head_count_kv(nkv)
    w.add_rope_dimension_count(d // nh)
    w.add_rope_freq_base(float(cfg.get("rope_theta", 10000.0)))
    w.add_layer_norm_rms_eps(float(cfg.get("rms_norm_eps", 1e-6)))
    w.add_vocab_size(cfg["vocab_size"])
    # vocabulary: ids in order; specials and byte pieces typed
    vocab = tok["model"]["vocab"]
    pieces = [None] * cfg["vocab_size"]
    for p, i in vocab.items():
        pieces[i] = p
    for a in tok.get("added_tokens", []):
        pieces[a["id"]] = a["content"]
    types, scores, toks = [], [], []
    for i, p in enumerate(pieces):
        p = p if p is not None else f"<unused{i}>"
        toks.append(p)
        scores.append(-float(i))
        if p == "<unk>":
            types.append(gguf.TokenType.UNKNOWN)
        elif p in ("<s>", "</s>"):
            types.append(gguf.TokenType.CONTROL)
        else:
            # byte pieces (<0xNN>) stay NORMAL: a random model's bytes are
            # seldom valid UTF-8, and llama-server fails a completion whose
            # text is not; as literal pieces the text is always valid (the
            # benchmark compares token ids and speed, not text)
            types.append(gguf.TokenType.NORMAL)
    w.add_tokenizer_model("llama")
    w.add_token_list(toks)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(cfg.get("bos_token_id", 1))
    eos = cfg.get("eos_token_id", 2)
    w.add_eos_token_id(eos[0] if isinstance(eos, list) else eos)
    names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
             "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    w.add_tensor("token_embd.weight", t["model.embed_tokens.weight"])
    w.add_tensor("output_norm.weight", t["model.norm.weight"].astype(np.float32))
    if "lm_head.weight" in t:
        w.add_tensor("output.weight", t["lm_head.weight"])
    for l in range(cfg["num_hidden_layers"]):
        for hf, gg in names.items():
            x = t[f"model.layers.{l}.{hf}.weight"]
            if hf == "self_attn.q_proj":
                x = rope_permute(x, nh)
            elif hf == "self_attn.k_proj":
                x = rope_permute(x, nkv)
            if gg.endswith("norm"):
                x = x.astype(np.float32)
            w.add_tensor(f"blk.{l}.{gg}.weight", np.ascontiguousarray(x))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return cfg


def write_adapter(gguf, cfg, ad_dir, out):
    acfg = json.load(open(f"{ad_dir}/adapter_config.json"))
    t = read_safetensors(f"{ad_dir}/adapter_model.safetensors")
    nh = cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads", nh)
    w = gguf.GGUFWriter(out, "llama")
    w.add_type(gguf.GGUFType.ADAPTER)
    w.add_string(gguf.Keys.Adapter.TYPE, "lora")
    w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(acfg["lora_alpha"]))
    gg = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
          "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}
    for name in sorted(t):
        if ".lora_A." not in name:
            continue
        parts = name.split(".")
        l = int(parts[parts.index("layers") + 1])
        mod = parts[parts.index("layers") + 3]
        a = t[name].astype(np.float32)
        b = t[name.replace(".lora_A.", ".lora_B.")].astype(np.float32)
        if mod == "q_proj":
            b = rope_permute(b, nh)
        elif mod == "k_proj":
            b = rope_permute(b, nkv)
        w.add_tensor(f"blk.{l}.{gg[mod]}.weight.lora_a", np.ascontiguousarray(a))
        w.add_tensor(f"blk.{l}.{gg[mod]}.weight.lora_b", np.ascontiguousarray(b))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main(argv):
    if len(argv) < 4 or len(argv) % 2:
        raise SystemExit(__doc__)
    sys.path.insert(0, argv[1])
    import gguf  # noqa: E402  (from the llama.cpp checkout)
    cfg = write_model(gguf, argv[2], argv[3])
    for i in range(4, len(argv), 2):
        write_adapter(gguf, cfg, argv[i], argv[i + 1])


if __name__ == "__main__":
    main(sys.argv)
