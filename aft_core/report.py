"""The results report of a pipeline run: one self-contained HTML file (no network needed to open it).

Sections: Table 1 with 95% CIs beside the paper's figures (and the BERTScore encoder used); the
training dynamics of every branch (ΔFocus, BERTScore, mean length, loss and reward against step,
checkpoints coloured by attractor label, ★ marked; the paper's Fig. 3); the sweep at a glance (β×γ
per η_kl and K, coloured by ΔFocus at ★, attractors marked); and the qualitative pairs chosen by a
stated rule, each with the cross-attention heatmaps of SFT and ★ (chosen and computed by
evaluation.qualitative_comparison). The run's artefacts are read through aft_core.layout; this module
only renders: it loads no model. Plots are matplotlib PNGs embedded as data URIs; the page has no scripts.
`aft report RUN_DIR` regenerates it.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aft_core.evaluation import PAPER_TABLE1, paired_changes, table1_cells
from aft_core.io import write_text_atomic
from aft_core.layout import RunLayout

LABEL_COLOURS = {
    "healthy": "#2b8a3e",
    "template_fixation": "#e8590c",
    "length_loop": "#1971c2",
    "generic_closing": "#9c36b5",
    "near_sft_inertia": "#868e96",
    "semantic_incoherence": "#c92a2a",
}


def _pyplot():
    os.environ.setdefault("MPLCONFIGDIR", os.path.join(os.environ.get("TMPDIR", "/tmp"), "mpl"))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    _pyplot().close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _num(value: Any, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and value != value) else f"{value:.{digits}f}"


# --- sections ----------------------------------------------------------------------------------------


def table1_html(table: dict[str, Any]) -> str:
    header, cells = table1_cells(table)
    head = "".join(f"<th>{_esc(name)}</th>" for name in header)
    rows = [
        "<tr>"
        + "".join(
            f"<td>{_esc(value)}" + (f"<br><small>{_esc(ci)}</small>" if ci else "") + "</td>" for value, ci in row
        )
        + "</tr>"
        for row in cells
    ]
    paper = "".join(
        f"<tr><td>{_esc(m)}</td><td>{f:.3f}</td><td>{rp:.3f}</td><td>{b:.3f}</td><td>{n:.1f}</td></tr>"
        for m, f, rp, b, n in PAPER_TABLE1
    )
    return (
        f"<h2>Table 1: test evaluation</h2><p>{table['examples']} {_esc(table['split'])} examples, greedy decoding; "
        f"mean with its 95% bootstrap CI. BERTScore F1 with <b>{_esc(table['bertscore_encoder'])}</b> (layer "
        f"{table['bertscore_layer']}); Focus under I_x = {_esc(table['ix_mode'])}; BLEU: sacrebleu corpus BLEU on "
        f"lexicalised responses ({_esc(table['rows'][0].get('bleu_signature', ''))}). Paired columns compare "
        f"each system with SFT on the same examples (paired bootstrap p-values).</p>"
        f"<table id='table1'><tr>{head}</tr>{''.join(rows)}</table>"
        + "<ul id='paired'>"
        + "".join(f"<li>{_esc(paired_changes(r))}</li>" for r in table["rows"] if r.get("vs_baseline"))
        + "</ul>"
        f"<p>The paper's figures (T5-Large on MultiWOZ 2.1, bert-score's default encoder; not comparable across "
        f"encoders or corpora):</p><table id='paper'><tr><th>Model</th><th>Focus</th><th>Repeat</th>"
        f"<th>BERTScore</th><th>Avg Len</th></tr>{paper}</table>"
    )


def dynamics_figure(
    branch_id: str, probe: pd.DataFrame, steps: pd.DataFrame | None, labels: dict[int, str], primary: int | None
) -> str:
    plt = _pyplot()
    panels = [
        ("delta_focus", "ΔFocus", probe),
        ("bertscore", "BERTScore", probe),
        ("mean_length", "mean length", probe),
    ]
    if "entity_accuracy" in probe and probe["entity_accuracy"].notna().any():
        panels.append(("entity_accuracy", "entity accuracy", probe))
    if steps is not None and len(steps):
        panels += [("loss", "loss", steps), ("reward_mean", "reward", steps)]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 2.6))
    for ax, (key, title, frame) in zip(axes, panels, strict=True):
        ax.plot(frame["step"], frame[key], color="#495057", lw=1)
        if frame is probe:
            for step, value in zip(probe["step"], probe[key], strict=True):
                ax.scatter(
                    [step], [value], color=LABEL_COLOURS.get(labels.get(int(step), "healthy"), "#000"), s=28, zorder=3
                )
            if primary is not None:
                star = probe[probe["step"] == primary]
                ax.scatter(star["step"], star[key], marker="*", s=220, color="#f59f00", edgecolor="k", zorder=4)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"branch {branch_id}", fontsize=9)
    return _png(fig)


def probe_conversations_figure(branch_id: str, probe: pd.DataFrame, primary: int | None) -> str | None:
    """A branch's probe conversations (`probe_conversations` > 0) per checkpoint: closed-loop success, the share of
    repeated replies and of conversations at the turn cap (the conversation-level Dam and Whirlpool) against step;
    and mean focus by system turn, one line per checkpoint (darker = later; ★ drawn thick). None without them."""
    if "conversation_focus_by_turn" not in probe or probe["conversation_focus_by_turn"].isna().all():
        return None
    plt = _pyplot()
    rows = probe[probe["conversation_focus_by_turn"].notna()]
    fig, axes = plt.subplots(1, 2, figsize=(10, 2.8))
    for key, label in (
        ("conversation_success", "success"),
        ("conversation_repeated_replies", "repeated replies"),
        ("conversation_timeout", "at the turn cap"),
    ):
        axes[0].plot(rows["step"], rows[key], marker="o", ms=3, label=label)
    if primary is not None:
        axes[0].axvline(primary, color="#f59f00", lw=1, ls="--", label="★")
    axes[0].set(title="probe conversations (sharded user)", xlabel="step", ylabel="share")
    axes[0].legend(fontsize=7)
    colours = plt.cm.viridis_r(np.linspace(0.15, 1.0, len(rows)))
    checkpoints = zip(rows["step"], rows["conversation_focus_by_turn"], strict=True)
    for colour, (step, by_turn) in zip(colours, checkpoints, strict=True):
        values = json.loads(by_turn)
        axes[1].plot(
            range(1, len(values) + 1),
            values,
            color=colour,
            lw=2.5 if step == primary else 1,
            label=f"step {int(step)}" + (" ★" if step == primary else ""),
        )
    axes[1].set(title="mean focus by system turn", xlabel="system turn", ylabel="focus (−entropy, nats)")
    axes[1].legend(fontsize=6, ncol=2)
    fig.suptitle(f"branch {branch_id}: conversations at each checkpoint", fontsize=9, y=1.03)
    return _png(fig)


def sweep_figure(branches: list[dict[str, Any]]) -> str | None:
    """β×γ grids, one panel per (η_kl, K), coloured by ΔFocus at ★; attractor-ended branches marked."""
    if not branches:
        return None
    plt = _pyplot()
    import numpy as np

    panels = sorted({(b["eta_kl"], b["k"]) for b in branches})
    betas = sorted({b["beta"] for b in branches})
    gammas = sorted({b["gamma"] for b in branches})
    values = [float(b["primary_delta_focus"]) for b in branches if b.get("primary_delta_focus") is not None]
    span = max([abs(v) for v in values] + [1e-6])
    fig, axes = plt.subplots(
        1, len(panels), figsize=(2.2 + 1.2 * len(betas) * len(panels), 2.4 + 0.4 * len(gammas)), squeeze=False
    )
    for ax, (eta_kl, k) in zip(axes[0], panels, strict=True):
        grid = np.full((len(gammas), len(betas)), np.nan)
        for b in branches:
            if (b["eta_kl"], b["k"]) == (eta_kl, k) and b.get("primary_delta_focus") is not None:
                grid[gammas.index(b["gamma"]), betas.index(b["beta"])] = b["primary_delta_focus"]
        image = ax.imshow(grid, cmap="RdYlGn", vmin=-span, vmax=span, origin="lower")
        for b in branches:
            if (b["eta_kl"], b["k"]) != (eta_kl, k):
                continue
            x, y = betas.index(b["beta"]), gammas.index(b["gamma"])
            label = b.get("final_label") or b.get("status", "")
            text = _num(b.get("primary_delta_focus"), 2) + ("" if label == "healthy" else f"\n{label[:12]}")
            ax.text(x, y, text, ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(betas)), [str(v) for v in betas], fontsize=7)
        ax.set_yticks(range(len(gammas)), [str(v) for v in gammas], fontsize=7)
        ax.set_xlabel("β", fontsize=8)
        ax.set_ylabel("γ", fontsize=8)
        ax.set_title(f"η_kl={eta_kl}, K={k}", fontsize=9)
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="ΔFocus at ★")
    return _png(fig)


def heatmap_figure(
    title: str, tokens: list[str], source_tokens: list[str], attention: Any, turns: list[int], ix_mask: list[bool]
) -> str:
    """Response tokens × source tokens; dashed lines at turn boundaries; I_x positions ticked in orange."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(min(14, 2 + 0.09 * len(source_tokens)), 1.2 + 0.16 * len(tokens)))
    ax.imshow(attention, aspect="auto", cmap="viridis")
    for s in range(1, len(turns)):
        if turns[s] != turns[s - 1]:
            ax.axvline(s - 0.5, color="white", lw=0.8, ls="--")
    for s, inside in enumerate(ix_mask):
        if inside:
            ax.plot([s], [-0.9], marker="|", color="#f59f00", markersize=5, clip_on=False)
    ax.set_yticks(range(len(tokens)), tokens, fontsize=6)
    step = max(1, len(source_tokens) // 60)
    ax.set_xticks(range(0, len(source_tokens), step), source_tokens[::step], fontsize=5, rotation=90)
    ax.set_title(title, fontsize=8)
    return _png(fig)


# --- the report -----------------------------------------------------------------------------------------

CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#212529}
table{border-collapse:collapse;margin:1em 0;font-size:13px}
td,th{border:1px solid #ced4da;padding:4px 8px;text-align:left}
th{background:#f1f3f5}img{max-width:100%;display:block;margin:0.5em 0}
.pair{border:1px solid #dee2e6;padding:1em;margin:1em 0}
.hist{font-size:12px;color:#495057}small{color:#868e96}.ok{color:#2b8a3e}.bad{color:#c92a2a}"""


def dynamics_html(run: RunLayout, branches: list[dict[str, Any]]) -> str:
    """Fig. 3 per branch: probe metrics per checkpoint coloured by label, ★ marked, loss and reward per step."""
    parts = [
        "<h2>Training dynamics</h2><p>Probe metrics per checkpoint (dots coloured by attractor label: "
        + ", ".join(f"<span style='color:{c}'>{k}</span>" for k, c in LABEL_COLOURS.items())
        + "; ★ = primary checkpoint), loss and mean reward per step.</p>"
    ]
    shown = (
        "beta",
        "gamma",
        "eta_kl",
        "k",
        "alpha",
        "ix_mode",
        "kl_estimator",
        "kl_target",
        "learning_rate",
        "adapter",
    )
    for b in branches:
        branch = run.branch(b["branch_id"])
        if not branch.probe.exists():
            parts.append(f"<p>branch {_esc(b['branch_id'])}: {_esc(b.get('status'))} {_esc(b.get('error', ''))}</p>")
            continue
        verdict = branch.read_verdict() if branch.verdict.exists() else {}
        labels = {c["step"]: c["label"] for c in verdict.get("checkpoints", [])}
        config = branch.read_config()
        grid = ", ".join(f"{k}={config.get(k, b.get(k))}" for k in shown if k in config or k in b)
        probe = pd.DataFrame(branch.read_probe_rows())
        figure = dynamics_figure(b["branch_id"], probe, branch.read_steps(), labels, verdict.get("primary_step"))
        parts.append(
            f"<h3>{_esc(b['branch_id'])} ({_esc(grid)}): {_esc(b.get('status'))}, healthy until step "
            f"{_esc(b.get('healthy_until'))}, final label {_esc(b.get('final_label'))}</h3>"
            f"<img alt='dynamics {b['branch_id']}' src='{figure}'>"
        )
        conversations = probe_conversations_figure(b["branch_id"], probe, verdict.get("primary_step"))
        if conversations:
            parts.append(f"<img alt='probe conversations {b['branch_id']}' src='{conversations}'>")
    return "".join(parts)


def sweep_html(branches: list[dict[str, Any]]) -> str:
    png = sweep_figure([b for b in branches if b.get("status") != "failed"])
    if not png:
        return ""
    return (
        f"<h2>The sweep at a glance</h2><p>ΔFocus at ★ on the probe for each β×γ, one panel per (η_kl, K); "
        f"a label marks a branch that ended in an attractor; blank cells have no ★.</p>"
        f"<img alt='sweep grid' src='{png}'>"
    )


def _venue_verdict(value: Any) -> str:
    if value is None or value != value:
        return ""
    return " <span class='ok'>✓ correct venue</span>" if value else " <span class='bad'>✗ no correct venue</span>"


def qualitative_html(qualitative: dict[str, Any] | None) -> str:
    """The pairs chosen by the rule (evaluation.qualitative_comparison), SFT against the best ★, with both heatmaps."""
    if qualitative is None:
        return (
            "<h2>Qualitative comparison</h2><p>Not computed for this run: `aft report RUN_DIR` computes it "
            "(evaluation/qualitative.json).</p>"
        )
    parts = [f"<h2>Qualitative comparison</h2><p>Rule: {_esc(qualitative['rule'])}.</p>"]
    star = qualitative["star"]
    if star is None:
        return parts[0] + "<p>No branch has a ★ checkpoint, so there is no ★ to compare with SFT.</p>"
    for pair in qualitative["pairs"]:
        sft_map = pair["maps"]["SFT"]
        history = "<br>".join(
            f"<b>{_esc(s)}:</b> {_esc(t)}" for s, t in zip(sft_map["speakers"], sft_map["history"], strict=True)
        )
        figures = "".join(
            f"<img alt='attention {who} {pair['example_id']}' src='"
            + heatmap_figure(
                f"{who}: cross-attention (response × source; dashed = turn boundary, orange = I_x)",
                m["tokens"],
                m["source_tokens"],
                np.asarray(m["attention"]),
                m["turns"],
                m["ix"],
            )
            + "'>"
            for who, m in (("SFT", sft_map), ("★", pair["maps"]["star"]))
        )
        parts.append(
            f"<div class='pair'><p><b>{_esc(pair['example_id'])}</b>: focus gain {pair['gain']:+.3f}</p>"
            f"<p class='hist'>{history}</p><p><b>reference:</b> {_esc(pair['reference'])}</p>"
            f"<p><b>SFT</b> (focus {pair['sft_focus']:.3f}): "
            f"{_esc(pair['sft'])}{_venue_verdict(pair['sft_correct'])}</p>"
            f"<p><b>{_esc(star)}</b> (focus {pair['star_focus']:.3f}): {_esc(pair['star'])}"
            f"{_venue_verdict(pair['star_correct'])}</p>{figures}</div>"
        )
    return "".join(parts)


TRANSCRIPT_RULE = (
    "the first goals, in split order, on which SFT and the other system differ in success under the "
    "sharded user (the first goals, when fewer differ)"
)


def trajectory_figure(rows: list[dict[str, Any]], mode: str) -> str:
    """Attention by system turn index, one line per system: the share on earlier turns and focus (all)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for row in rows:
        points = [t for t in row["trajectory"] if t["n"] >= 3]  # a turn index reached by fewer conversations is noise
        if not points:
            continue
        turns = [t["turn"] for t in points]
        axes[0].plot(turns, [t["earlier_share"] for t in points], marker="o", label=row["system"])
        axes[1].plot(turns, [t["focus/all"] for t in points], marker="o", label=row["system"])
    axes[0].set(title=f"share of attention on earlier turns ({mode})", xlabel="system turn", ylabel="share")
    axes[1].set(title=f"focus, I_x = all ({mode})", xlabel="system turn", ylabel="−entropy (nats)")
    axes[0].legend(fontsize=7)
    return _png(fig)


def conversations_html(run: RunLayout) -> str:
    """The closed-loop stage: the success table with CIs, the degradation, the attention trajectory by turn, and
    three transcripts side by side (TRANSCRIPT_RULE)."""
    from aft_core.dialogue.closed_loop import (
        ANCHORS,
        CONVERSATION_HEADER,
        conversation_caption,
        conversation_cells,
        conversation_notes,
    )

    if not run.conversations.table.exists():
        return ""
    table = run.conversations.read_table()
    if "skipped" in table:
        return f"<h2>Conversations with the user simulator</h2><p>Not run: {_esc(table['skipped'])}.</p>"
    parts = ["<h2>Conversations with the user simulator</h2>", f"<p>{_esc(conversation_caption(table))}</p>"]
    header = "<tr>" + "".join(f"<th>{_esc(h)}</th>" for h in CONVERSATION_HEADER) + "</tr>"
    for mode, rows in table["rows"].items():
        body = "".join(
            "<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in cells) + "</tr>" for cells in conversation_cells(rows)
        )
        parts.append(f"<h3>reveal: {_esc(mode)}</h3><table class='conversations'>{header}{body}</table>")
    parts += [f"<p>{_esc(line)}</p>" for line in conversation_notes(table)]
    for mode, rows in table["rows"].items():
        if any(r["trajectory"] for r in rows):
            parts.append(f"<img alt='attention trajectory {mode}' src='{trajectory_figure(rows, mode)}'>")
    records = run.conversations.read_transcripts()
    models = [r["system"] for r in next(iter(table["rows"].values())) if r["system"] not in ANCHORS]
    if len(models) >= 2:
        mode = "sharded" if "sharded" in table["rows"] else next(iter(table["rows"]))
        pick = [models[0], models[1]]
        by = {(r["system"], r["dialogue_id"]): r for r in records if r["reveal"] == mode and r["system"] in pick}
        ids = list(dict.fromkeys(r["dialogue_id"] for r in records if r["reveal"] == mode))
        differ = [i for i in ids if by[(pick[0], i)]["outcome"]["success"] != by[(pick[1], i)]["outcome"]["success"]]
        chosen = (differ + [i for i in ids if i not in differ])[:3]
        parts.append(
            f"<h3>Three conversations side by side ({_esc(mode)} user)</h3><p>Rule: {_esc(TRANSCRIPT_RULE)}.</p>"
        )
        for dialogue_id in chosen:
            columns = []
            for system in pick:
                record = by[(system, dialogue_id)]
                turns = "<br>".join(f"<b>{_esc(t['speaker'])}:</b> {_esc(t['text'])}" for t in record["turns"])
                columns.append(
                    f"<td><p><b>{_esc(system)}</b>: success {record['outcome']['success']:.0f}, "
                    f"{record['outcome']['turns']} turns</p><p class='hist'>{turns}</p></td>"
                )
            parts.append(
                f"<table class='transcripts'><tr><th colspan='2'>{_esc(dialogue_id)}</th></tr>"
                f"<tr>{''.join(columns)}</tr></table>"
            )
    return "".join(parts)


def build_report(run_dir: str | Path) -> Path:
    """Write <run_dir>/report.html from the run's tables; returns its path."""
    run = RunLayout(run_dir)
    table = run.evaluation.read_table()
    branches = run.branch_rows()  # each with its current verdict
    name = _esc(run.root.resolve().name)
    body = "".join(
        (
            f"<h1>AFT run: {name}</h1>",
            table1_html(table),
            dynamics_html(run, branches),
            sweep_html(branches),
            qualitative_html(run.evaluation.read_qualitative()),
            conversations_html(run),
            frontier_html(run.frontier),
            decoder_only_html(run.decoder_only),
            multiturn_html(run.multiturn),
        )
    )
    page = (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>AFT report: {name}</title>"
        f"<style>{CSS}</style></head><body>{body}</body></html>"
    )
    write_text_atomic(run.report, page)
    return run.report


def decoder_only_html(folder: Path) -> str:
    """The decoder-only experiment (experiments/decoder_only.py --out RUN_DIR/decoder_only), when present."""
    if not (folder / "decoder_only.json").exists():
        return ""
    result = json.loads((folder / "decoder_only.json").read_text())

    def ci(e: dict[str, Any]) -> str:
        return f"{e['effect']:+.3f} [{e['ci'][0]:+.3f}, {e['ci'][1]:+.3f}]"

    rows = []
    for fam in result["families"]:
        for r in fam["rows"]:
            t = r["test"]
            rows.append(
                f"<tr><td>{_esc(fam['family'])}</td><td>{_esc(r['setting'])}</td><td>{r['with_star']}/{r['n']}</td>"
                f"<td>{r['healthy_until_mean']:.0f}</td><td>{_esc(', '.join(r['final_labels']))}</td>"
                f"<td>{ci(t['focus'])}</td><td>{ci(t['bertscore'])}</td><td>{ci(t['entity_accuracy'])}</td>"
                f"<td>{ci(t['lookback'])}</td></tr>"
            )
    plot = ""
    if (folder / "decoder_only.png").exists():
        png = base64.b64encode((folder / "decoder_only.png").read_bytes()).decode()
        plot = f"<img alt='decoder-only' src='data:image/png;base64,{png}'>"
    return (
        "<h2>Decoder-only against encoder–decoder</h2><table id='decoder-only'><tr><th>family</th><th>setting</th>"
        "<th>★</th><th>healthy until</th><th>terminal</th><th>ΔFocus</th><th>ΔBERTScore</th><th>Δentity</th>"
        f"<th>Δlookback</th></tr>{''.join(rows)}</table><p>{_esc(result['answer'])}</p>{plot}"
    )


def effect_cell(effect: dict[str, Any] | None) -> str:
    """A table cell: a nested effect (aft_core.protocol.nested_effect) and its interval, or a dash."""
    if not effect:
        return "<td>–</td>"
    low, high = effect["ci"]
    return f"<td>{effect['effect']:+.3f}<br><small>[{low:+.3f}, {high:+.3f}]</small></td>"


def frontier_html(folder: Path) -> str:
    """The frontier experiment under the claims protocol, when present.

    Written by experiments/frontier.py --out RUN_DIR/frontier."""
    if not (folder / "frontier.json").exists():
        return ""
    frontier = json.loads((folder / "frontier.json").read_text())

    rows = []
    for r in frontier["rows"]:
        test = r.get("test") or {}
        entity = test.get("entity_accuracy")
        rows.append(
            f"<tr><td>{_esc(r['setting'])}</td><td>{_esc(str(r['point']))}</td>"
            f"<td>{'yes' if r['carried_to_test'] else 'no'}</td>"
            + effect_cell(entity)
            + effect_cell(test.get("bertscore"))
            + effect_cell(test.get("focus"))
            + f"<td>{_num(entity['p'] if entity else None)}</td><td>{_num(r['p_holm'])}</td>"
            f"<td>{'holds' if r['survives'] else 'does not hold'}</td></tr>"
        )
    plot = ""
    if (folder / "frontier.png").exists():
        png = base64.b64encode((folder / "frontier.png").read_bytes()).decode()
        plot = f"<img alt='frontier' src='data:image/png;base64,{png}'>"
    return (
        f"<h2>Frontier over SFT and AFT seeds</h2><p>{len(frontier['sft_seeds'])} SFT models × "
        f"{len(frontier['aft_seeds'])} AFT seeds per setting; point chosen and settings carried on dev, test scored "
        f"once. Test: {_esc(frontier['test'])}. Correction: {_esc(frontier['correction'])}. Δ against each branch's "
        f"own SFT model, mean over SFT models [95% t-interval].</p><table id='frontier'><tr><th>setting</th>"
        f"<th>point (dev)</th><th>to test</th><th>Δentity acc.</th><th>ΔBERTScore</th><th>ΔFocus</th><th>p</th>"
        f"<th>p Holm</th><th>claim</th></tr>{''.join(rows)}</table><p>{_esc(frontier['answer'])}</p>{plot}"
    )


MULTITURN_EXPERIMENTS = {
    "conversations": "Single-turn AFT in whole conversations (experiments/conversations.py)",
    "multiturn": "AFT on its own conversations (experiments/multiturn.py)",
}


def multiturn_html(folder: Path) -> str:
    """The closed-loop experiments under the claims protocol, when present in RUN_DIR/multiturn: per setting the dev
    choice, test Δsuccess (sharded, full), the sharding drop, single-turn Δentity accuracy and ΔBERTScore, with 95%
    t-intervals over SFT models; the plain answer and the plot."""
    parts = []
    for name, title in MULTITURN_EXPERIMENTS.items():
        if not (folder / f"{name}.json").exists():
            continue
        result = json.loads((folder / f"{name}.json").read_text())

        rows = []
        for r in result["rows"]:
            test = r.get("test") or {}
            dev = ", ".join(f"{p} {v:+.3f}" for p, v in r["dev_delta_success"].items())
            rows.append(
                f"<tr><td>{_esc(r['setting'])}</td><td>{_esc(dev)}</td><td>{_esc(str(r['point']))}</td>"
                f"<td>{'yes' if r['carried_to_test'] else 'no'}</td>"
                + "".join(
                    effect_cell(test.get(k))
                    for k in ("success_sharded", "success_full", "sharding_drop", "entity_accuracy", "bertscore")
                )
                + f"<td>{_num(r['p_holm'])}</td><td>{'holds' if r['survives'] else 'does not hold'}</td></tr>"
            )
        plot = ""
        if (folder / f"{name}.png").exists():
            png = base64.b64encode((folder / f"{name}.png").read_bytes()).decode()
            plot = f"<img alt='{name}' src='data:image/png;base64,{png}'>"
        parts.append(
            f"<h2>{_esc(title)}</h2><p>{len(result['sft_seeds'])} SFT models × {len(result['aft_seeds'])} AFT seeds "
            f"per setting; the point and the settings carried are chosen on dev conversations (sharded user), test "
            f"scored once. Test: {_esc(result['test'])}. Correction: {_esc(result['correction'])}.</p>"
            f"<table id='{name}'><tr><th>setting</th><th>dev Δsuccess</th><th>point</th><th>to test</th>"
            "<th>Δsuccess sharded</th><th>Δsuccess full</th><th>sharding drop</th><th>Δentity acc.</th>"
            f"<th>ΔBERTScore</th><th>p Holm</th><th>claim</th></tr>{''.join(rows)}</table>"
            f"<p>{_esc(result['answer'])}</p>{plot}"
        )
    return "".join(parts)
