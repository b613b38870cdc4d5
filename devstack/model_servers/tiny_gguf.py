"""Write a tiny llama-architecture GGUF model for llama.cpp's server (run with .venv-models' Python).

No weights can be downloaded here, and none are needed: the model is built so that its next-token scores are
the same at every position, a fixed preference over its 256 byte tokens. Every layer's output projection is
zero and every token embeds to the same vector, so the hidden state (and so the logits) never changes; the
output matrix then gives each byte its preference. With the server's JSON-schema grammar this makes a
deterministic model that writes the shortest valid answer it can: it prefers ``"`` (so a string closes as soon
as it may), then letters and digits, then ``]``, ``}``, ``:`` and ``,`` (so an array or object closes as soon as
it may, rather than growing). The server, its OpenAI-compatible API, its
structured-output grammar and the client are all real; only the "knowledge" is absent.

    python tiny_gguf.py OUT.gguf
"""

from __future__ import annotations

import sys

import gguf
import numpy as np

N_EMBD, N_FF, N_HEAD, N_LAYER, N_CTX = 64, 128, 4, 1, 16384
SPECIALS = ["<unk>", "<s>", "</s>"]
PREFERRED = b'"' + b"abcdefghijklmnopqrstuvwxyz" + b"ABCDEFGHIJKLMNOPQRSTUVWXYZ" + b"0123456789" + b"]}:,"


def byte_scores() -> np.ndarray:
    """One logit per token: specials lowest, then bytes in ``PREFERRED`` order, everything else below them."""
    logits = np.full(len(SPECIALS) + 256, -10.0, dtype=np.float32)
    for rank, byte in enumerate(PREFERRED):
        logits[len(SPECIALS) + byte] = 60.0 - rank * 0.5  # steep: even sampled at temperature 1 the order holds
    return logits


def write(path: str) -> None:
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("ehrflow-tiny")
    writer.add_context_length(N_CTX)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD)
    writer.add_rope_dimension_count(N_EMBD // N_HEAD)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    tokens = SPECIALS + [f"<0x{b:02X}>" for b in range(256)]
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * len(tokens))
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    writer.add_token_types(types + [gguf.TokenType.BYTE] * 256)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    n_vocab = len(tokens)
    ones = np.ones(N_EMBD, dtype=np.float32)
    writer.add_tensor("token_embd.weight", np.ones((n_vocab, N_EMBD), dtype=np.float32))
    writer.add_tensor("output_norm.weight", ones)
    writer.add_tensor("output.weight", np.repeat(byte_scores()[:, None] / N_EMBD, N_EMBD, axis=1))
    for i in range(N_LAYER):
        square = np.zeros((N_EMBD, N_EMBD), dtype=np.float32)
        writer.add_tensor(f"blk.{i}.attn_norm.weight", ones)
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"blk.{i}.{name}.weight", square)
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", ones)
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", np.zeros((N_FF, N_EMBD), dtype=np.float32))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", np.zeros((N_FF, N_EMBD), dtype=np.float32))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", np.zeros((N_EMBD, N_FF), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


if __name__ == "__main__":
    write(sys.argv[1])
