"""GGRO on an accelerator: correctness checks and timings (no model hub, no trained weights).

    python benchmarks/device_check.py --device cuda

1. Correctness on the device: with ``num_refinements=0`` GGRO reproduces
   transformers' greedy ``generate`` token for token (Llama and Qwen2); GGRO
   sequential/parallel, Best-of-N and seeded sampling run and are reproducible.
2. Timing: a random model with SmolLM2-135M's body (576 hidden, 30 layers,
   9 heads / 3 KV heads) and a reward head over its own backbone; wall time of
   GGRO sequential and parallel and Best-of-8 as ratios to greedy, all measured
   in this run. The entropy threshold is set from the policy's own greedy
   entropies (80th percentile), so about one position in five can trigger.
   Random weights say nothing about reward quality; only costs are measured.
3. vLLM (``--vllm``, on by default when vLLM is installed and a GPU is present;
   skipped with a message otherwise, and nothing else depends on it): serve the
   embedded default's converted checkpoint with ``vllm serve`` on loopback and
   check the server backend against it: greedy through ``ServerBackend`` equals
   vLLM's own greedy completion token for token; GGRO with the default reward
   model (in process) yields events; the top-20 entropy estimate agrees with the
   exact in-process entropy at the default threshold; and 16 concurrent GGRO
   generations against 16 one after another (requests per second).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ggro_integrations import GGRODecoder  # noqa: E402
from ggro_integrations.rewards import HFRewardModel  # noqa: E402
from ggro_integrations.testing import tiny_causal_lm, tiny_reward_model, tiny_tokenizer  # noqa: E402

PROMPTS = ["Tell me about the water and the light", "Why is the world so big?", "Write a word about home"]


def check_correctness(device: str) -> None:
    tok = tiny_tokenizer()
    for arch in ("llama", "qwen2"):
        policy = tiny_causal_lm(tok, arch).to(device)
        reward = HFRewardModel(tiny_reward_model(tok, arch).to(device), tok)
        decoder = GGRODecoder(policy, tok, reward, max_new_tokens=32, entropy_threshold=1.0, num_refinements=4)
        for prompt in PROMPTS:
            text = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                           tokenize=False)
            ids = torch.tensor([tok.encode(text, add_special_tokens=False)], device=device)
            ref = policy.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=32, do_sample=False)
            ref = ref[0, ids.shape[1]:].tolist()
            ref = ref[: ref.index(tok.eos_token_id)] if tok.eos_token_id in ref else ref
            got = decoder.generate(prompt, num_refinements=0).token_ids
            assert got == ref, f"{arch}: greedy mismatch on {device}: {got} vs {ref}"
            for refinement in ("sequential", "parallel"):
                r = decoder.generate(prompt, refinement=refinement)
                assert r.reward is not None and r.stats.triggers > 0
            a = decoder.generate(prompt, temperature=1.0, seed=7)
            b = decoder.generate(prompt, temperature=1.0, seed=7)
            assert a.token_ids == b.token_ids, "seeded sampling must reproduce on the device"
            bon = decoder.generate(prompt, strategy="best_of_n", n=4, seed=1)
            assert bon.reward == max(s["reward"] for s in bon.samples)
        print(f"[ok] {arch} on {device}: greedy equivalence, sequential, parallel, seeded sampling, best-of-n")


def smollm2_sized(device: str, dtype: torch.dtype) -> GGRODecoder:
    from transformers import LlamaConfig, LlamaForCausalLM

    from ggro_integrations.rewards.default import reward_view

    tok = tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None, tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    policy = LlamaForCausalLM(config)
    with torch.no_grad():
        policy.lm_head.weight.mul_(40.0)  # spread the next-token entropies like a trained model's
    policy = policy.to(device=device, dtype=dtype).eval()
    head = torch.nn.Linear(576, 1).to(device=device, dtype=dtype)
    return GGRODecoder(policy, tok, reward_view(policy, tok, head, name="random-head"))


def timed(decoder: GGRODecoder, device: str, **kwargs) -> tuple[float, list]:
    results, start = [], time.perf_counter()
    for i, prompt in enumerate(PROMPTS):
        results.append(decoder.generate(prompt, seed=i, **kwargs))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, results


def time_strategies(device: str, dtype: torch.dtype, max_new_tokens: int) -> None:
    decoder = smollm2_sized(device, dtype)
    probe = [e.entropy for p in PROMPTS
             for e in decoder.generate(p, num_refinements=0, entropy_threshold=0.0, min_segment_tokens=1,
                                       max_new_tokens=max_new_tokens).interventions]
    threshold = statistics.quantiles(probe, n=10)[7]
    common = {"max_new_tokens": max_new_tokens, "entropy_threshold": threshold}
    timed(decoder, device, strategy="greedy", **common)  # warm-up (kernels, allocator)
    greedy_s, _ = timed(decoder, device, strategy="greedy", **common)
    print(f"\nSmolLM2-135M-sized random policy, {dtype}, {device}, {max_new_tokens} new tokens x {len(PROMPTS)} "
          f"prompts, entropy_threshold={threshold:.2f} (80th percentile), S=8, K=25")
    print(f"{'strategy':<18}{'seconds':>9}{'x greedy':>10}{'triggers':>10}{'policy tok':>12}{'reward tok':>12}")
    print(f"{'greedy':<18}{greedy_s:9.2f}{1.0:10.2f}")
    for name, kw in [("ggro-sequential", {"refinement": "sequential"}), ("ggro-parallel", {"refinement": "parallel"}),
                     ("best-of-8", {"strategy": "best_of_n", "n": 8})]:
        seconds, results = timed(decoder, device, **common, **kw)
        triggers = sum(r.stats.triggers for r in results)
        ptok = sum(r.stats.policy_tokens_processed for r in results)
        rtok = sum(r.stats.reward_tokens_processed for r in results)
        print(f"{name:<18}{seconds:9.2f}{seconds / greedy_s:10.2f}{triggers:10d}{ptok:12d}{rtok:12d}")


def _wait_healthy(url: str, process, timeout: float) -> None:  # type: ignore[no-untyped-def]
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"vllm exited with status {process.returncode} while starting")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(1)
    raise TimeoutError(f"vllm at {url} was not healthy within {timeout:.0f}s")


def check_vllm(max_new_tokens: int, startup_timeout: float = 600.0) -> bool:
    """The server backend against a real vLLM on this GPU; False (with the reason) when it cannot run here."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        print("[skip] vLLM check: vllm is not installed (pip install vllm on a GPU machine)")
        return False
    if not torch.cuda.is_available():
        print("[skip] vLLM check: no CUDA device")
        return False
    import asyncio
    import math
    import subprocess
    import tempfile

    from ggro_integrations.backends import Sampling
    from ggro_integrations.backends.server import CompletionRequest
    from ggro_integrations.backends.server.llama_server import free_port
    from ggro_integrations.decoding.segments import SegmentRules
    from ggro_integrations.decoding.stopping import StopSequences
    from ggro_integrations.decoding.threads import AsyncGenerationStream
    from ggro_integrations.default_model import default_policy_dir
    from ggro_integrations.factory import build_decoder
    from ggro_integrations.models import load_policy

    model, tokenizer = load_policy("default", progress=False)  # converts the packaged GGUF once
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(default_policy_dir()),
            "--served-model-name", "smollm2", "--host", "127.0.0.1", "--port", str(port),
            "--max-logprobs", "20", "--max-model-len", "2048", "--gpu-memory-utilization", "0.25",
            "--enable-prefix-caching", "--seed", "0"]
    print("starting:", " ".join(argv))
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        try:
            try:
                _wait_healthy(url, process, startup_timeout)
            except (RuntimeError, TimeoutError) as exc:
                log.seek(0)
                print(f"[fail] vLLM did not start: {exc}\n{log.read().decode(errors='replace')[-3000:]}")
                return False
            decoder = build_decoder("default", "default", server=url, engine="vllm", max_new_tokens=max_new_tokens,
                                    device="cuda")
            backend = decoder.backend
            for prompt in PROMPTS:
                ids = decoder.prompt_ids(prompt)
                own = backend.client.complete(CompletionRequest(prompt=ids, max_tokens=max_new_tokens, top_logprobs=1,
                                                                stop_token_ids=sorted(backend.eos_ids)))
                want = [t for t in own.token_ids if t not in backend.eos_ids]
                got = decoder.generate(prompt, strategy="greedy").token_ids
                assert got == want, f"vLLM greedy through ServerBackend differs: {got} vs {want}"
            print("[ok] vLLM: greedy through ServerBackend equals vLLM's own greedy completion")
            result = decoder.generate(PROMPTS[1])
            print(f"[ok] vLLM: GGRO ran, {result.stats.triggers} triggers, {result.stats.interventions_accepted} "
                  f"accepted, {result.stats.policy_forward_passes} requests ({result.stats.policy_requests_aborted} "
                  f"aborted), cached prompt tokens {result.stats.policy_prompt_tokens_cached}")
            tau, pairs = decoder.config.entropy_threshold, []
            for prompt in PROMPTS:
                ids = decoder.prompt_ids(prompt)
                rules = SegmentRules(tokenizer, math.inf, 1, backend.eos_ids, StopSequences([]), max_new_tokens)
                session = backend.open(ids, rules, Sampling())
                segment = session.decode([], session.start(), [None])[0]
                session.close()
                with torch.no_grad():
                    logits = model(input_ids=torch.tensor([ids + segment.tokens])).logits[0, len(ids) - 1:].float()
                logp = torch.log_softmax(logits, -1)
                pairs += list(zip((-(logp.exp() * logp).sum(-1)).tolist(), segment.entropies))
            agree = sum((e >= tau) == (s >= tau) for e, s in pairs) / max(1, len(pairs))
            print(f"[{'ok' if agree >= 0.9 else 'low'}] vLLM: trigger agreement {agree:.1%} over {len(pairs)} positions "
                  f"at tau={tau}")
            many = [PROMPTS[i % len(PROMPTS)] for i in range(16)]
            started = time.perf_counter()
            for prompt in many:
                decoder.generate(prompt)
            sequential = time.perf_counter() - started

            async def concurrent() -> None:
                await asyncio.gather(*(AsyncGenerationStream(decoder.stream(p)).result_when_done() for p in many))

            started = time.perf_counter()
            asyncio.run(concurrent())
            together = time.perf_counter() - started
            print(f"[ok] vLLM: 16 GGRO generations, one after another {16 / sequential:.2f}/s, "
                  f"concurrently {16 / together:.2f}/s ({sequential / together:.1f}x)")
            return True
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--vllm", action=argparse.BooleanOptionalAction, default=None,
                        help="run the vLLM server-backend check (default: when vllm is installed and CUDA is present)")
    parser.add_argument("--only-vllm", action="store_true", help="run only the vLLM check")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, device {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else ""))
    if not args.only_vllm:
        check_correctness(args.device)
        time_strategies(args.device, torch.float32, args.max_new_tokens)
        if args.device.startswith("cuda"):
            time_strategies(args.device, torch.bfloat16, args.max_new_tokens)
    if args.vllm or args.only_vllm or args.vllm is None:
        check_vllm(min(args.max_new_tokens, 48))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
