"""Compact torch versions of the three model families, sized by the config.

They follow the Hugging Face reference architectures closely (names in the comments), without
importing ``transformers``: that import alone costs seconds, paid again by every trial process.

- ``Llama``: pre-RMSNorm decoder, rotary position embeddings, SwiGLU MLP, no biases.
- ``GPT``: GPT-2 decoder, pre-LayerNorm, learned positions, GELU MLP.
- ``Bert``: post-LayerNorm bidirectional encoder, learned positions and token types, a
  ``[CLS]`` pooler and a classification head.

Decoders classify from the last token's hidden state, as ``LlamaForSequenceClassification``
does; ``Bert`` from the pooled first token, as ``BertForSequenceClassification``. Every model
maps token ids ``(batch, seq)`` to logits ``(batch, num_classes)``. The decoders are also causal
language models: ``token_logits`` applies the same head at every position, so with
``num_classes`` equal to the vocabulary size it is the LM head the GRPO trial samples from.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

INIT_STD = 0.02  # initializer_range of the reference configs


def _check_heads(hidden_size: int, num_heads: int) -> None:
    if num_heads < 1 or hidden_size % num_heads:
        raise ValueError(
            f"model.hidden_size ({hidden_size}) must be a multiple of model.num_heads "
            f"({num_heads}); change one of them."
        )


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


class SelfAttention(nn.Module):
    """Multi-head self-attention over ``F.scaled_dot_product_attention``."""

    def __init__(
        self, hidden_size: int, num_heads: int, *, bias: bool, causal: bool, dropout: float
    ) -> None:
        super().__init__()
        _check_heads(hidden_size, num_heads)
        self.num_heads = num_heads
        self.causal = causal
        self.dropout = dropout
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size, bias=bias)
        self.out = nn.Linear(hidden_size, hidden_size, bias=bias)

    def forward(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = (
            y.view(b, t, self.num_heads, c // self.num_heads).transpose(1, 2)
            for y in self.qkv(x).split(c, dim=-1)
        )
        if rope is not None:
            q, k = _apply_rope(q, rope), _apply_rope(k, rope)
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=self.causal, dropout_p=self.dropout if self.training else 0.0
        )
        out: torch.Tensor = self.out(y.transpose(1, 2).reshape(b, t, c))
        return out


# --- Llama ---------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """``LlamaRMSNorm``: scale by the root mean square, computed in float32."""

    def __init__(self, size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def _rope_tables(head_dim: int, max_len: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    freqs = torch.outer(torch.arange(max_len, dtype=torch.float32), inv_freq)
    angles = torch.cat([freqs, freqs], dim=-1)  # Hugging Face's rotate_half layout
    return angles.cos(), angles.sin()


def _apply_rope(x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    cos, sin = (r[: x.shape[-2]].to(x.dtype) for r in rope)
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class SwiGLU(nn.Module):
    """``LlamaMLP``: ``down(silu(gate(x)) * up(x))``."""

    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.gate = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.down(F.silu(self.gate(x)) * self.up(x))
        return out


class LlamaBlock(nn.Module):
    def __init__(
        self, hidden_size: int, num_heads: int, intermediate_size: int, dropout: float
    ) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(hidden_size)
        self.attn = SelfAttention(hidden_size, num_heads, bias=False, causal=True, dropout=dropout)
        self.mlp_norm = RMSNorm(hidden_size)
        self.mlp = SwiGLU(hidden_size, intermediate_size)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x = x + self.drop(self.attn(self.attn_norm(x), rope))
        out: torch.Tensor = x + self.drop(self.mlp(self.mlp_norm(x)))
        return out


class Llama(nn.Module):
    """``LlamaForSequenceClassification`` with a randomly initialised tiny configuration."""

    def __init__(
        self,
        *,
        vocab_size: int,
        num_classes: int,
        max_seq_len: int,
        hidden_size: int = 64,
        num_layers: int = 2,
        num_heads: int = 4,
        intermediate_size: int = 172,
        dropout: float = 0.0,
        rope_theta: float = 10000.0,
    ) -> None:
        super().__init__()
        _check_heads(hidden_size, num_heads)
        self.embed = nn.Embedding(vocab_size, hidden_size)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            LlamaBlock(hidden_size, num_heads, intermediate_size, dropout)
            for _ in range(num_layers)
        )
        self.norm = RMSNorm(hidden_size)
        self.score = nn.Linear(hidden_size, num_classes, bias=False)
        cos, sin = _rope_tables(hidden_size // num_heads, max_seq_len, rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(_init_weights)

    def hidden_states(self, tokens: torch.Tensor) -> torch.Tensor:
        """The final normed hidden state of every position, ``(batch, seq, hidden_size)``."""
        rope = (self.rope_cos, self.rope_sin)
        x = self.drop(self.embed(tokens))
        for block in self.blocks:
            x = block(x, rope)
        out: torch.Tensor = self.norm(x)
        return out

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        # the last token has seen the whole sequence
        out: torch.Tensor = self.score(self.hidden_states(tokens)[:, -1])
        return out

    def token_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """``LlamaForCausalLM``: next-token logits at every position (``num_classes`` = vocab)."""
        out: torch.Tensor = self.score(self.hidden_states(tokens))
        return out


# --- GPT-2 ---------------------------------------------------------------------------------


class GPTBlock(nn.Module):
    def __init__(
        self, hidden_size: int, num_heads: int, intermediate_size: int, dropout: float
    ) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(hidden_size, eps=1e-5)
        self.attn = SelfAttention(hidden_size, num_heads, bias=True, causal=True, dropout=dropout)
        self.ln_2 = nn.LayerNorm(hidden_size, eps=1e-5)
        self.fc = nn.Linear(hidden_size, intermediate_size)
        self.proj = nn.Linear(intermediate_size, hidden_size)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln_1(x)))
        mlp = self.proj(F.gelu(self.fc(self.ln_2(x)), approximate="tanh"))  # GPT-2's gelu_new
        out: torch.Tensor = x + self.drop(mlp)
        return out


class GPT(nn.Module):
    """``GPT2ForSequenceClassification`` with a randomly initialised tiny configuration."""

    def __init__(
        self,
        *,
        vocab_size: int,
        num_classes: int,
        max_seq_len: int,
        hidden_size: int = 64,
        num_layers: int = 2,
        num_heads: int = 4,
        intermediate_size: int = 256,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _check_heads(hidden_size, num_heads)
        self.wte = nn.Embedding(vocab_size, hidden_size)
        self.wpe = nn.Embedding(max_seq_len, hidden_size)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            GPTBlock(hidden_size, num_heads, intermediate_size, dropout) for _ in range(num_layers)
        )
        self.ln_f = nn.LayerNorm(hidden_size, eps=1e-5)
        self.score = nn.Linear(hidden_size, num_classes, bias=False)
        self.apply(_init_weights)
        for name, param in self.named_parameters():  # GPT-2 scales residual projections by depth
            if name.endswith(("attn.out.weight", "proj.weight")):
                nn.init.normal_(param, mean=0.0, std=INIT_STD / math.sqrt(2 * num_layers))

    def hidden_states(self, tokens: torch.Tensor) -> torch.Tensor:
        """The final normed hidden state of every position, ``(batch, seq, hidden_size)``."""
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.drop(self.wte(tokens) + self.wpe(positions))
        for block in self.blocks:
            x = block(x)
        out: torch.Tensor = self.ln_f(x)
        return out

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.score(self.hidden_states(tokens)[:, -1])
        return out

    def token_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """``GPT2LMHeadModel``: next-token logits at every position (``num_classes`` = vocab)."""
        out: torch.Tensor = self.score(self.hidden_states(tokens))
        return out


# --- BERT ----------------------------------------------------------------------------------


class BertLayer(nn.Module):
    def __init__(
        self, hidden_size: int, num_heads: int, intermediate_size: int, dropout: float
    ) -> None:
        super().__init__()
        self.attn = SelfAttention(hidden_size, num_heads, bias=True, causal=False, dropout=dropout)
        self.attn_norm = nn.LayerNorm(hidden_size, eps=1e-12)
        self.intermediate = nn.Linear(hidden_size, intermediate_size)
        self.output = nn.Linear(intermediate_size, hidden_size)
        self.out_norm = nn.LayerNorm(hidden_size, eps=1e-12)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attn_norm(x + self.drop(self.attn(x)))  # post-LayerNorm
        out: torch.Tensor = self.out_norm(x + self.drop(self.output(F.gelu(self.intermediate(x)))))
        return out


class Bert(nn.Module):
    """``BertForSequenceClassification`` with a randomly initialised tiny configuration."""

    def __init__(
        self,
        *,
        vocab_size: int,
        num_classes: int,
        max_seq_len: int,
        hidden_size: int = 64,
        num_layers: int = 2,
        num_heads: int = 4,
        intermediate_size: int = 256,
        type_vocab_size: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _check_heads(hidden_size, num_heads)
        self.word_embeddings = nn.Embedding(vocab_size, hidden_size)
        self.position_embeddings = nn.Embedding(max_seq_len, hidden_size)
        self.token_type_embeddings = nn.Embedding(type_vocab_size, hidden_size)
        self.embed_norm = nn.LayerNorm(hidden_size, eps=1e-12)
        self.drop = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            BertLayer(hidden_size, num_heads, intermediate_size, dropout) for _ in range(num_layers)
        )
        self.pooler = nn.Linear(hidden_size, hidden_size)
        self.classifier = nn.Linear(hidden_size, num_classes)
        self.apply(_init_weights)

    def forward(
        self, tokens: torch.Tensor, token_types: torch.Tensor | None = None
    ) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        types = torch.zeros_like(tokens) if token_types is None else token_types
        x = self.word_embeddings(tokens) + self.position_embeddings(positions)
        x = self.drop(self.embed_norm(x + self.token_type_embeddings(types)))
        for layer in self.layers:
            x = layer(x)
        pooled = torch.tanh(self.pooler(x[:, 0]))  # the [CLS] token
        out: torch.Tensor = self.classifier(self.drop(pooled))
        return out
