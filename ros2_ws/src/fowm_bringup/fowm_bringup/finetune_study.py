"""One controlled online-finetuning experiment on a finished `make demo` run (the table in
docs/experiments.md, "Where the dip comes from", is a list of these).

    python -m fowm_bringup.finetune_study --run artifacts/demo [--set optim.lr=1e-4 ...]
        [--online-policy planner|expert|random] [--episodes 10] [--eval-episodes 20] [--seed 1001]
        [--restore qs reward ...] [--eval-first-seed 0]

Loads the run's model config, pretrained weights and offline bags (what its trainer node started
from), finetunes in process with `fowm_core.training.finetune_online` for `--episodes` online
episodes (acting with the planner, as the demo, or with the scripted expert or a uniformly random
policy as controls; overrides apply to the finetuning only), then evaluates the planner and the
policy prior on held-out seeds 10000.. (20 by default: the demo's 10 are too noisy to tell variants
apart), with the planner's mean Q-ensemble uncertainty along its chosen plans. `--restore GROUP ...`
also evaluates the finetuned model with one head group at a time put back to its pretrained weights,
to find which part of the model the finetuning damaged. `--eval-first-seed 0 --episodes 0
--eval-pretrained` scores the pretrained model on the offline episodes' own layouts (fowm-collect
resets episode i with seed i), the check for a model that memorised its training goals. Prints one
JSON line and appends it to `--results`. One torch thread unless told otherwise.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from fowm_bringup.demo import prior_policy
from fowm_bringup.ros_demo import Layout

POLICIES = ("planner", "expert", "random")
# WorldModel state_dict prefixes of each head group `--restore` can put back (EMA targets included)
RESTORABLE = {
    "qs": ("qs.", "target.qs."),
    "reward": ("reward_head.",),
    "dynamics": ("dynamics.",),
    "policy": ("policy.",),
    "value": ("value.",),
    "encoder": ("encoders.", "enc_norms.", "target.encoders.", "target.enc_norms."),
}


def restored(finetuned: dict, pretrained: dict, group: str) -> dict:
    """The finetuned weights with `group`'s tensors taken from the pretrained ones."""
    prefixes = RESTORABLE[group]
    return {k: (pretrained[k] if k.startswith(prefixes) else v) for k, v in finetuned.items()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, type=Path, help="a finished `make demo` output directory")
    p.add_argument("--set", nargs="*", default=[], help="config overrides for the finetuning (a.b=value)")
    p.add_argument("--online-policy", choices=POLICIES, default="planner", help="who acts online")
    p.add_argument("--episodes", type=int, default=10, help="online episodes")
    p.add_argument("--eval-episodes", type=int, default=20, help="held-out evaluation episodes")
    p.add_argument(
        "--eval-first-seed", type=int, default=10_000,
        help="first evaluation seed (10000: held out; 0: the offline episodes' own layouts)",
    )  # fmt: skip
    p.add_argument("--eval-pretrained", action="store_true", help="also evaluate before finetuning")
    p.add_argument("--seed", type=int, default=1001, help="first online episode's seed (and sampling)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--results", type=Path, default=None, help="JSONL file to append the result to")
    p.add_argument(
        "--restore", nargs="*", default=[], choices=sorted(RESTORABLE),
        help="also evaluate the finetuned model with each of these head groups put back to pretrained",
    )  # fmt: skip
    a = p.parse_args(argv)
    if a.episodes < 0 or a.eval_episodes < 1 or a.eval_first_seed < 0:
        p.error(
            "need --episodes >= 0, --eval-episodes >= 1 and --eval-first-seed >= 0, got "
            f"{a.episodes}, {a.eval_episodes}, {a.eval_first_seed}"
        )
    layout = Layout(a.run)
    for path in (layout.config, layout.offline_bags, layout.pretrain / "weights.safetensors"):
        if not path.exists():
            p.error(f"{a.run} is not a finished `make demo` run: {path} is missing")
    return a


def main(argv: list[str] | None = None) -> dict:
    a = parse_args(argv)
    # Imported after argument checks: the sim and torch models take a few seconds to load.
    from fowm_core.agent import FOWMAgent
    from fowm_core.buffer import EpisodeBuffer
    from fowm_core.config import load_config, parse_overrides
    from fowm_core.runtime import configure_process
    from fowm_core.training import evaluate, finetune_online
    from fowm_core.weights import load_weights_into
    from fowm_sim.collect import medium_noise
    from fowm_sim.env import XArmTaskEnv
    from fowm_sim.experts import scripted_expert
    from fowm_trainer.ingest import ACTION_DIM, BagIngestor, observation_spec
    from fowm_xarm.observation import ObservationConfig

    configure_process(a.threads)
    t0 = time.perf_counter()
    layout = Layout(a.run)
    summary_file = layout.root / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    task = summary.get("config", {}).get("task", "reach")
    cfg = load_config(str(layout.config), parse_overrides(tuple(a.set)))
    obs_cfg = ObservationConfig()
    spec = observation_spec(obs_cfg)
    episodes = BagIngestor(obs_cfg).scan([str(layout.offline_bags)]).episodes
    offline = EpisodeBuffer.holding(spec, ACTION_DIM, episodes, cfg.optim.horizon)
    online_capacity = (a.episodes + 1) * (cfg.schedule.episode_length + 1)
    online = EpisodeBuffer(spec, ACTION_DIM, online_capacity, cfg.optim.horizon)
    agent = FOWMAgent(cfg, spec, ACTION_DIM)
    load_weights_into(agent, layout.pretrain / "weights.safetensors")
    env = XArmTaskEnv(task)
    rng = np.random.default_rng(a.seed)
    expert = scripted_expert(task)
    expert_noise = medium_noise(task)  # the offline data's own behaviour
    collect = {
        "planner": None,
        "expert": lambda _obs, _first: expert(env, rng, expert_noise),
        "random": lambda _obs, _first: rng.uniform(-1.0, 1.0, ACTION_DIM).astype(np.float32),
    }[a.online_policy]
    seeds = [a.eval_first_seed + i for i in range(a.eval_episodes)]

    def planner_policy(uncertainties: list[float]):
        """The noise-free planner (as `evaluate` acts), keeping each plan's Q-ensemble uncertainty."""

        def act(obs, first: bool) -> np.ndarray:
            action = agent.act(obs, first_step=first, explore=False)
            uncertainties.append(agent.planner.last_plan_info["uncertainty"])
            return action

        return act

    def score(label: str, prior: bool = True) -> dict[str, float]:
        unc: list[float] = []
        plan = evaluate(agent, env, a.eval_episodes, seeds, policy=planner_policy(unc))
        out = {
            f"{label}_planner_success": plan["success_rate"], f"{label}_planner_return": plan["return"],
            f"{label}_planner_uncertainty": float(np.mean(unc)),
        }  # fmt: skip
        if prior:
            pri = evaluate(None, env, a.eval_episodes, seeds, policy=prior_policy(agent))
            out |= {f"{label}_prior_success": pri["success_rate"], f"{label}_prior_return": pri["return"]}
        return out

    result: dict = {"run": str(a.run), "task": task, "set": a.set, "online_policy": a.online_policy,
                    "episodes": a.episodes, "eval_episodes": a.eval_episodes,
                    "eval_first_seed": a.eval_first_seed, "seed": a.seed}  # fmt: skip
    if a.eval_pretrained:
        result |= score("pretrained")
    pretrained = agent.get_weights()
    rows = finetune_online(
        agent, env, offline, online, a.episodes, progress=False, seed=a.seed, collect_policy=collect
    )
    result |= score("finetuned")
    finetuned = agent.get_weights()
    for group in a.restore:
        agent.load_weights(restored(finetuned, pretrained, group))
        result |= score(f"restored_{group}", prior=False)
    if a.restore:
        agent.load_weights(finetuned)  # leave the agent as finetuned
    result |= {
        "online_returns": [round(r["return"], 3) for r in rows],
        "online_successes": [int(r["success"]) for r in rows],
        "updates": agent.num_updates,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(result), flush=True)
    if a.results is not None:
        with a.results.open("a") as f:
            f.write(json.dumps(result) + "\n")
    return result


if __name__ == "__main__":
    main()
