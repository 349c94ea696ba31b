"""Batching: which examples form each training step (length-bucketed, a pure function of seed and epoch
for exact resume), padded id tensors with each source token's map (turn, speaker tag, slot value), and the
source position sets I_x read from that map."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from aft_core.config import IX_MODES


def epoch_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Shuffled batches of similar source length; a pure function of (seed, epoch) for exact resume."""
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches: list[list[int]] = []
    chunk = batch_size * 50
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: lengths[i])
        batches.extend(part[k : k + batch_size] for k in range(0, len(part), batch_size))
    rng.shuffle(batches)
    return batches


class BatchSchedule:
    """Global step -> batch of example indices; one epoch's order is built once and reused for its steps."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int):
        self.lengths, self.batch_size, self.seed = lengths, batch_size, seed
        self._epoch, self._batches = 0, epoch_batches(lengths, batch_size, seed, 0)
        self.per_epoch = len(self._batches)

    def __call__(self, step: int) -> list[int]:
        epoch, position = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            self._epoch, self._batches = epoch, epoch_batches(self.lengths, self.batch_size, self.seed, epoch)
        return self._batches[position]


def position_mask(
    mode: str,
    attention_mask: torch.Tensor,
    src_turn: torch.Tensor,
    src_is_tag: torch.Tensor,
    src_is_salient: torch.Tensor,
    src_is_template: torch.Tensor,
) -> torch.Tensor:
    """I_x as a bool mask [B,S].

    all:      every non-pad prompt position except template tokens and a decoder-only model's attention sink
              (AFT_SPEC §8; an encoder's source has none), so sum_j A[t,j] = 1 and coverage = 1/|I_x|;
    history:  tokens of earlier turns only: not the current (last) user turn, not speaker tags, not EOS;
    salient:  tokens inside annotated slot values / entity mentions of any source turn.
    """
    real = attention_mask.bool()  # [B,S]
    if mode == "all":
        return real & ~src_is_template.bool()
    if mode == "history":
        current = src_turn.masked_fill(~real, -1).max(dim=1, keepdim=True).values  # [B,1]
        return real & (src_turn >= 0) & (src_turn < current) & ~src_is_tag.bool()
    if mode == "salient":
        return real & src_is_salient.bool()
    raise ValueError(f"unknown I_x mode {mode!r}; use one of {IX_MODES}")


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists into ids [B, L] and a 0/1 attention mask [B, L]."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


@dataclass
class SourceBatch:
    """Padded sources with their token map: all [B,S]."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    src_turn: torch.Tensor
    src_is_tag: torch.Tensor
    src_is_salient: torch.Tensor
    src_is_template: torch.Tensor  # template tokens and the attention sink (decoder-only prompts): in no I_x

    @classmethod
    def from_rows(cls, rows: Sequence[dict[str, Any]], pad_id: int) -> SourceBatch:
        ids, mask = pad_batch([r["input_ids"] for r in rows], pad_id)
        width = ids.shape[1]

        def padded(key: str, fill: int) -> torch.Tensor:
            return torch.tensor([list(r[key]) + [fill] * (width - len(r[key])) for r in rows], dtype=torch.long)

        return cls(
            ids,
            mask,
            padded("src_turn", -1),
            padded("src_is_tag", 0).bool(),
            padded("src_is_salient", 0).bool(),
            padded("src_is_template", 0).bool(),
        )

    def to(self, device: torch.device) -> SourceBatch:
        return SourceBatch(
            *(
                t.to(device)
                for t in (
                    self.input_ids,
                    self.attention_mask,
                    self.src_turn,
                    self.src_is_tag,
                    self.src_is_salient,
                    self.src_is_template,
                )
            )
        )

    def mask(self, mode: str) -> torch.Tensor:
        return position_mask(
            mode, self.attention_mask, self.src_turn, self.src_is_tag, self.src_is_salient, self.src_is_template
        )

    def repeat(self, k: int) -> SourceBatch:
        """Each prompt k times, adjacent (the order of a prompt's K samples)."""
        return SourceBatch(
            *(
                t.repeat_interleave(k, dim=0)
                for t in (
                    self.input_ids,
                    self.attention_mask,
                    self.src_turn,
                    self.src_is_tag,
                    self.src_is_salient,
                    self.src_is_template,
                )
            )
        )
