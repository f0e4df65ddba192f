"""The LSTM sequence autoencoder and its losses.

embedding → (bi)LSTM encoder → pooled states → bottleneck z (the document vector)
z → initial decoder state, and concatenated to every decoder input → LSTM decoder → softmax over words.

Why the extras (see shared/QUALITY_NOTES.md: a naive version learns a language model and ignores z):
- word dropout on the decoder input and z fed at every step make the decoder depend on z;
- a bag-of-words head predicts the chunk's words from z alone, so z must carry its topic;
- a linear head regresses z onto the LSA coordinates of the same words' TF-IDF vector (`tfidf_weight`,
  default 4): z then carries the word-level directions a linear probe reads;
- an adaptive softmax cuts the output layer's cost, which otherwise dominates training FLOPs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from vecjob.config import ModelConfig
from vecjob.tokenizer import BOS, EOS, PAD, UNK


@dataclass
class Batch:
    """Padded chunks: tokens [B, T] (PAD after each length), lengths [B] (>= 1), and optionally the
    bag-of-words targets [B, C] (each chunk with its document context, PAD-padded; None = the tokens)."""

    tokens: torch.Tensor
    lengths: torch.Tensor
    bow_tokens: torch.Tensor | None = None

    def to(self, device: torch.device) -> "Batch":
        # lengths stay on the CPU: pack_padded_sequence wants them there.
        bow = self.bow_tokens.to(device, non_blocking=True) if self.bow_tokens is not None else None
        return Batch(self.tokens.to(device, non_blocking=True), self.lengths, bow)


@dataclass
class Losses:
    total: torch.Tensor
    recon: torch.Tensor  # mean cross-entropy per target token (nats)
    bow: torch.Tensor  # mean cross-entropy per bag-of-words token (nats)
    kl: torch.Tensor  # mean KL per chunk (variational), else 0
    tfidf: torch.Tensor  # mean squared error per chunk of the regression onto LSA coordinates (0..~1), else 0
    tokens: int  # target tokens in the batch


# The adaptive softmax over the frequency-sorted vocabulary: a head of the 1,000 most frequent words,
# a tail cluster to 6,000 and one for the rest, projected to a quarter and a sixteenth of hidden_dim.
# Every target token passes through the head, so its size sets most of the layer's cost: 1,000
# trains faster than 2,000 (bench/README.md, "The adaptive softmax's head").
ADAPTIVE_CUTOFFS = (1_000, 6_000)


def adaptive_cutoffs(vocab_size: int) -> list[int]:
    cuts = [c for c in ADAPTIVE_CUTOFFS if c < vocab_size - 1]
    return cuts or [max(1, vocab_size // 2)]


def saved_cutoffs(state: dict, vocab_size: int) -> list[int] | None:
    """The cutoffs of the adaptive softmax whose weights `state` holds (a model trained with other
    cutoffs still loads); None without one, or when its shapes make none (the caller then names
    what disagrees)."""
    if "output.head.weight" not in state:
        return None
    tails = sum(1 for name in state if name.startswith("output.tail.") and name.endswith(".1.weight"))
    cuts = [state["output.head.weight"].shape[0] - tails]
    for i in range(tails - 1):
        if (tail := state.get(f"output.tail.{i}.1.weight")) is None:
            return None
        cuts.append(cuts[-1] + tail.shape[0])
    return cuts if 0 < cuts[0] and all(a < b for a, b in zip(cuts, [*cuts[1:], vocab_size])) else None


class SequenceAutoencoder(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab_size: int, cutoffs: list[int] | None = None):
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, cfg.embed_dim, padding_idx=PAD)
        # One bidirectional layer, so each chunk's vector sees both of its ends; its states are pooled
        # by mean and max over time (4 × hidden_dim), which carry more than the last states.
        self.encoder = nn.LSTM(cfg.embed_dim, cfg.hidden_dim, batch_first=True, bidirectional=True)
        self.to_z = nn.Linear(4 * cfg.hidden_dim, cfg.dim)
        self.to_logvar = nn.Linear(4 * cfg.hidden_dim, cfg.dim) if cfg.variant == "variational" else None
        self.z_to_state = nn.Linear(cfg.dim, 2 * cfg.hidden_dim)
        self.decoder = nn.LSTM(cfg.embed_dim + cfg.dim, cfg.hidden_dim, batch_first=True)
        self.drop = nn.Dropout(cfg.dropout)
        self.output = nn.AdaptiveLogSoftmaxWithLoss(
            cfg.hidden_dim, vocab_size, cutoffs=cutoffs or adaptive_cutoffs(vocab_size), div_value=4.0
        )
        self.bow = nn.Linear(cfg.dim, vocab_size) if cfg.bow_weight > 0 else None
        # The TF-IDF vector's part that a linear map from z can fit at all lies in an `embed_dim`-wide
        # subspace, and the collection's LSA directions are the best such: regressing z onto those
        # coordinates, instead of onto all `vocab_size` weights through a learnt map, keeps the head
        # from memorising the training documents' own words (bench/README.md, "The TF-IDF head onto LSA
        # coordinates").
        self.tfidf = nn.Linear(cfg.dim, cfg.embed_dim) if cfg.tfidf_weight > 0 else None
        if self.tfidf is not None:
            # A zero map starts the regression at its trivial loss instead of pushing z around with a
            # random head's large errors.
            nn.init.zeros_(self.tfidf.weight)
            nn.init.zeros_(self.tfidf.bias)
        # Training-only, not saved: the TF-IDF target's inverse document frequencies
        # (set_document_frequencies) and the LSA directions it is projected on (set_lsa_basis).
        self.register_buffer("tfidf_idf", torch.ones(vocab_size), persistent=False)
        self.register_buffer("lsa_basis", torch.zeros(vocab_size, cfg.embed_dim), persistent=False)
        # Mean training-chunk vector, set after training and subtracted from every document vector:
        # a shared offset would otherwise dominate cosine similarity (all scores near 1).
        self.register_buffer("z_center", torch.zeros(cfg.dim))

    def set_document_frequencies(self, doc_freqs, n_docs: int) -> None:
        """In how many of `n_docs` training targets each token id occurs: the TF-IDF target's idf
        (scikit-learn's smoothed form, log((1 + n) / (1 + df)) + 1; special tokens weigh 0)."""
        df = torch.as_tensor(doc_freqs, dtype=torch.float64)
        if df.shape != (self.vocab_size,):
            raise ValueError(f"{df.shape[0]} document frequencies for a vocabulary of {self.vocab_size}")
        idf = torch.log((1.0 + n_docs) / (1.0 + df)) + 1.0
        idf[: EOS + 1] = 0.0
        self.tfidf_idf.copy_(idf.to(self.tfidf_idf))

    def set_lsa_basis(self, term_vectors) -> None:
        """The TF-IDF head's target space: the columns of the LSA term vectors [vocab_size, embed_dim],
        scaled to unit length (an orthonormal basis; all-zero columns stay zero)."""
        basis = torch.as_tensor(term_vectors, dtype=torch.float32)
        self.lsa_basis.copy_(basis / basis.norm(dim=0, keepdim=True).clamp(min=1e-12))

    # ---- encoder: what `vecjob encode` runs ---------------------------------------------------

    def encode_states(self, batch: Batch, lstm_bf16: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Mean of z (the document vector) and, for the variational variant, its log-variance.
        `lstm_bf16` runs the LSTM of a batch without padding in bfloat16 (its pooling and z stay float32)."""
        emb = self.embedding(batch.tokens)
        if bool((batch.lengths == batch.tokens.shape[1]).all()):
            # No padding: the dense call is the same computation, and torch runs it through its
            # oneDNN kernel on CPU (packed sequences take a slower per-step loop).
            if lstm_bf16:  # entered only then: a caller's own autocast (bench/gpu.py) stays in force
                with torch.autocast(emb.device.type, dtype=torch.bfloat16):
                    states, _ = self.encoder(emb)
                states = states.float()
            else:
                states, _ = self.encoder(emb)
            pooled = torch.cat([states.mean(1), states.amax(1)], dim=-1)
        else:
            pooled = self._pool_packed(emb, batch.lengths)
        mu = self.to_z(pooled)
        logvar = self.to_logvar(pooled) if self.to_logvar is not None else None
        return mu, logvar

    def _pool_packed(self, emb: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Mean and max over each chunk's own steps, as the dense path pools a batch without padding."""
        out, _ = self.encoder(pack_padded_sequence(emb, lengths, batch_first=True, enforce_sorted=False))
        states, _ = pad_packed_sequence(out, batch_first=True)  # [B, T, 2H], T = max length
        valid = (torch.arange(states.shape[1], device=states.device)[None, :]
                 < lengths.to(states.device)[:, None]).unsqueeze(-1)
        mean = (states * valid).sum(1) / lengths.to(states.device, states.dtype)[:, None]
        return torch.cat([mean, states.masked_fill(~valid, float("-inf")).amax(1)], dim=-1)

    @torch.inference_mode()
    def embed(self, batch: Batch, lstm_bf16: bool = False) -> torch.Tensor:
        """Document vectors for a batch of chunks (no sampling, no dropout effects), centred."""
        return self.encode_states(batch, lstm_bf16)[0] - self.z_center

    # ---- training objective --------------------------------------------------------------------

    def forward(self, clean: Batch, corrupted: Batch | None = None, kl_scale: float = 1.0) -> Losses:
        """Encode the (possibly corrupted) input, reconstruct the clean chunk, and score it."""
        mu, logvar = self.encode_states(corrupted if corrupted is not None else clean)
        kl = mu.new_zeros(())
        z = mu
        if logvar is not None:
            if self.training:
                z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
            kl_per_dim = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).mean(0)  # [dim], batch mean
            # Free bits: dimensions under the floor carry no KL penalty, which keeps z in use.
            kl = torch.clamp(kl_per_dim, min=self.cfg.free_bits).sum()

        recon, n_tokens = self._reconstruction(z, clean)
        bow = self._bag_of_words(z, clean) if self.bow is not None else mu.new_zeros(())
        tfidf = self._tfidf_regression(z, clean) if self.tfidf is not None else mu.new_zeros(())
        total = (recon + self.cfg.bow_weight * bow + self.cfg.tfidf_weight * tfidf
                 + self.cfg.kl_weight * kl_scale * kl)
        return Losses(total=total, recon=recon, bow=bow, kl=kl, tfidf=tfidf, tokens=n_tokens)

    def _decoder_hidden(self, z: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder outputs for targets = tokens + EOS, inputs = BOS + tokens (teacher forcing)."""
        tokens, lengths = batch.tokens, batch.lengths
        B, T = tokens.shape
        bos = tokens.new_full((B, 1), BOS)
        inputs = torch.cat([bos, tokens], dim=1)  # [B, T+1]
        targets = torch.cat([tokens, tokens.new_full((B, 1), PAD)], dim=1)
        targets[torch.arange(B, device=tokens.device), lengths.to(tokens.device)] = EOS
        if self.training and self.cfg.word_dropout > 0:
            drop = (torch.rand(inputs.shape, device=inputs.device) < self.cfg.word_dropout) & (inputs > EOS)
            inputs = inputs.masked_fill(drop, UNK)
        emb = self.drop(self.embedding(inputs))
        emb = torch.cat([emb, z.unsqueeze(1).expand(-1, emb.shape[1], -1)], dim=-1)
        state = torch.tanh(self.z_to_state(z)).view(B, 2, 1, self.cfg.hidden_dim)
        h0 = state[:, 0].transpose(0, 1).contiguous()
        c0 = state[:, 1].transpose(0, 1).contiguous()
        if bool((lengths == T).all()):
            hidden, _ = self.decoder(emb, (h0, c0))  # no padding: the dense call, oneDNN's kernel on CPU
        else:
            packed = pack_padded_sequence(emb, lengths + 1, batch_first=True, enforce_sorted=False)
            out, _ = self.decoder(packed, (h0, c0))
            hidden, _ = pad_packed_sequence(out, batch_first=True, total_length=T + 1)
        return self.drop(hidden), targets

    def _reconstruction(self, z: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, int]:
        hidden, targets = self._decoder_hidden(z, batch)
        keep = targets != PAD
        t = targets[keep]
        return self.output(hidden[keep], t).loss, int(t.numel())

    def _bag_of_words(self, z: torch.Tensor, batch: Batch) -> torch.Tensor:
        logp = F.log_softmax(self.bow(z), dim=-1)  # [B, V]
        tokens = batch.bow_tokens if batch.bow_tokens is not None else batch.tokens
        nll = -logp.gather(1, tokens)  # [B, T]
        words = (tokens > EOS).float()  # every word alike; special tokens and padding not at all
        return (nll * words).sum() / words.sum().clamp(min=1e-6)

    def tfidf_targets(self, batch: Batch) -> torch.Tensor:
        """[B, V] L2-normalised TF-IDF rows (sublinear tf, as scikit-learn's sublinear_tf) of each
        chunk's bag-of-words target."""
        tokens = batch.bow_tokens if batch.bow_tokens is not None else batch.tokens
        tf = torch.zeros(tokens.shape[0], self.vocab_size, device=tokens.device)
        tf.scatter_add_(1, tokens, (tokens > EOS).float())
        weight = (1.0 + tf.clamp(min=1.0).log()) * (tf > 0) * self.tfidf_idf
        return weight / weight.norm(dim=1, keepdim=True).clamp(min=1e-12)

    def _tfidf_regression(self, z: torch.Tensor, batch: Batch) -> torch.Tensor:
        return (self.tfidf(z) - self.tfidf_targets(batch) @ self.lsa_basis).pow(2).sum(1).mean()

    @torch.no_grad()
    def token_accuracy(self, z: torch.Tensor, batch: Batch) -> tuple[int, int]:
        """Greedy next-token accuracy under teacher forcing: (correct, total)."""
        hidden, targets = self._decoder_hidden(z, batch)
        keep = targets != PAD
        t = targets[keep]
        return int((self.output.predict(hidden[keep]) == t).sum()), int(t.numel())


def corrupt(batch: Batch, cfg: ModelConfig, generator: torch.Generator | None = None) -> Batch:
    """Denoising input: delete tokens, mask some as <unk>, shuffle locally; every chunk keeps >= 1 token.

    Each chunk loses round(delete_prob × length) tokens at random positions (a fixed count, not a coin
    per token), so chunks of equal length stay of equal length: an equal-length batch keeps the dense
    LSTM path (see `encode_states`) instead of the packed one."""
    tokens, lengths = batch.tokens, batch.lengths
    B, T = tokens.shape
    valid = torch.arange(T)[None, :] < lengths[:, None]
    n_delete = torch.minimum(torch.round(lengths * cfg.delete_prob).long(), lengths - 1)
    # The n_delete lowest random scores among a chunk's tokens are deleted; padding scores 2, never lowest.
    scores = torch.rand((B, T), generator=generator).masked_fill(~valid, 2.0)
    rank = scores.argsort(dim=1).argsort(dim=1)
    keep = valid & (rank >= n_delete[:, None])
    new_lengths = lengths - n_delete
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)  # kept tokens first, in order
    out = tokens.gather(1, order)
    out = out.masked_fill(torch.arange(T)[None, :] >= new_lengths[:, None], PAD)[:, : int(new_lengths.max())]
    if cfg.mask_prob > 0:
        mask = (torch.rand(out.shape, generator=generator) < cfg.mask_prob) & (out != PAD)
        out = out.masked_fill(mask, UNK)
    return Batch(out, new_lengths)

