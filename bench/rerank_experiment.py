"""Issue 4's reranker experiment in one command: train the recipes, then evaluate a suite of first-stage and
reranked conditions on the test split, and print training time, pairs/s and the metric table.

    # the GPU experiment (see eval/results/train_scifact_gpu_PENDING.md for the device set-up)
    python3 bench/rerank_experiment.py --model .device/model --data-root .device/datasets \\
        --index indexes/scifact-device --out /tmp/rerank --pack $OUT/rerank_gpu.tar.gz --deadline-s 540
    # the CPU-small figures (train, then one scoring pass for the reranker alone and interpolated)
    python3 bench/rerank_experiment.py --suite eval/scifact-rerank-cpu.toml \\
        --recipes training/scifact-cpu-small.toml --single-pass --name rerank_cpu_small
    # a smoke run of every piece at tiny scale (CPU, a few minutes)
    python3 bench/rerank_experiment.py --work /tmp/rx --index /tmp/rx/index --out /tmp/rx/results \\
        --limit-test-queries 3 --rerank-set depth=5 --set max_steps=2 --set limit_queries=12 \\
        --set dev_queries=3 --set dev_depth=5 --set max_length=128 --set epochs=1

Steps: (1) the suite's first-stage conditions, which build or reuse the index (BM25 + dense) that training mines
and evaluates dev on; (2) the untrained-head model (``--untrained-head``: the base model with a fresh one-output
head, seeded as training seeds it, so it equals the training run's epoch-0 model), when a condition uses it;
(3) for each recipe in order: ``searchkit.train.train`` then the suite's conditions that rerank with its output
(with the first recipe, the untrained-head conditions too). A condition reranks with a recipe's output when its
``rerank.model`` is that recipe's ``output``. With ``--deadline-s``, a later recipe is skipped (and said so) when
the first one's training plus evaluation time would overrun the deadline.

Environment overrides, for machines that lack the embedded model package or keep data elsewhere (the lent GPU):
``--model DIR`` replaces the base model of every recipe and the dense model of every condition (a local copy
of all-MiniLM-L6-v2; fp16 weights are first upcast to an fp32 copy under ``--work``, because transformers 5
loads a checkpoint in its stored dtype and training needs fp32 master weights); ``--data-root DIR`` replaces
the folder that holds the dataset folders (suite sources and recipe corpora); ``--limit-test-queries N`` evaluates
only the first N judged test queries (a trimmed copy of the dataset folder under ``--work``). Any of these
needs ``--index`` (a separate index path), so the suite's own index is never rebuilt. ``--set KEY=VALUE`` and
``--rerank-set KEY=VALUE`` override TrainConfig / RerankConfig fields (values in TOML syntax) for smoke runs.

``--single-pass``: each reranker scores its first stage's candidates once and every condition that differs only
in ``interpolation`` / ``fusion`` is derived from those scores (``CrossEncoderReranker.mix``, as ``rerank_batch``,
on the same logits). Without it, reranked conditions run through
:func:`searchkit.suite.run_suite` like ``searchkit eval``.

Results (``--out``, default eval/results): ``<name>.json`` (training summaries, every condition's metrics,
expected scores, environment, the command) and ``<name>.md`` (the tables), the suite result JSONs
``<name>.<phase>.json`` with a gzip'd TREC run per condition, and ``--pack FILE.tar.gz`` bundles all of them with each
trained model's searchkit.json, train_log.jsonl, training_curves.png and dev_run.trec (the device returns at most
8 files). Reranked conditions should have ``k`` equal to their rerank ``depth``: hits below the depth keep
first-stage scores, which evaluation would sort among the reranker's.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import json
import logging
import os
import platform
import shutil
import sys
import tarfile
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a source tree (the device machine has no `pip install -e .`)

from searchkit.config import RerankConfig, TrainConfig, config_from_dict, config_to_dict, load_train_recipe  # noqa: E402
from searchkit.suite import Condition, Suite, SuiteResult, load_suite, run_suite  # noqa: E402

logger = logging.getLogger("rerank_experiment")

DEFAULT_RECIPES = [
    str(ROOT / "training" / name)
    for name in ("scifact-gpu.toml", "scifact-gpu-pointwise.toml", "scifact-gpu-pointwise-class.toml")
]
METRIC = "nDCG@10"


# ---------------------------------------------------------------------------------------------- arguments


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default=str(ROOT / "eval" / "scifact-rerank.toml"))
    parser.add_argument("--recipes", nargs="+", default=DEFAULT_RECIPES, help="training recipes, main one first")
    parser.add_argument(
        "--untrained-head",
        default=str(ROOT / "training" / "scifact-untrained-head"),
        help="folder for the base model with a fresh head (created when a condition uses it)",
    )
    parser.add_argument("--model", default=None, help="local copy of the base/dense model (see the docstring)")
    parser.add_argument("--data-root", default=None, help="folder holding the dataset folders (e.g. scifact/)")
    parser.add_argument("--index", default=None, help="index path for every condition and recipe")
    parser.add_argument("--limit-test-queries", type=int, default=None, help="smoke runs: first N test queries")
    parser.add_argument(
        "--set",
        dest="train_set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="TrainConfig override for every recipe (TOML value), repeatable",
    )
    parser.add_argument(
        "--rerank-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="RerankConfig override for every reranked condition; depth also sets k",
    )
    parser.add_argument("--work", default=None, help="outputs and copies go here instead of the recipes' outputs")
    parser.add_argument("--out", default=str(ROOT / "eval" / "results"), help="results folder")
    parser.add_argument("--name", default="rerank_gpu", help="results file prefix")
    parser.add_argument("--pack", default=None, help="also bundle every result into this .tar.gz")
    parser.add_argument("--single-pass", action="store_true", help="score each reranker once (see docstring)")
    parser.add_argument("--skip-train", action="store_true", help="use the trained outputs already there")
    parser.add_argument("--only-recipes", nargs="*", default=None, help="train/evaluate only these recipe names")
    parser.add_argument("--no-first-stage", action="store_true", help="skip the first-stage rows (index exists)")
    parser.add_argument("--only-conditions", nargs="*", default=None, help="suite conditions to run (fnmatch)")
    parser.add_argument("--deadline-s", type=float, default=None, help="skip later recipes that would overrun")
    parser.add_argument("--progress", action="store_true", help="progress bars")
    return parser.parse_args(argv)


def toml_value(text: str) -> Any:
    """``KEY=VALUE`` values in TOML syntax (``2``, ``1e-4``, ``"cpu"``, ``true``); bare words are strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_settings(items: Sequence[str]) -> dict[str, Any]:
    settings = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"expected KEY=VALUE, got {item!r}")
        settings[key.strip()] = toml_value(value.strip())
    return settings


# ---------------------------------------------------------------------------------------------- environment


def fp32_copy(model: Path, work: Path) -> Path:
    """``model`` itself when its weights are fp32, else a copy with every floating tensor upcast to fp32."""
    import torch
    from safetensors.torch import load_file, save_file

    weights = model / "model.safetensors"
    if not weights.is_file():
        return model
    tensors = load_file(str(weights))
    if all(t.dtype == torch.float32 for t in tensors.values() if t.is_floating_point()):
        return model
    target = work / f"{model.name}-fp32"
    if (target / "model.safetensors").is_file():
        return target
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(model, target, ignore=shutil.ignore_patterns("model.safetensors"))
    upcast = {k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}
    save_file(upcast, str(target / "model.safetensors"), metadata={"format": "pt"})
    logger.info("model %s has non-fp32 weights: fp32 copy at %s (training keeps fp32 master weights)", model, target)
    return target


def trimmed_dataset(source: Path, work: Path, limit: int) -> Path:
    """A copy of a BEIR folder whose qrels/test.tsv keeps only its first ``limit`` queries (others linked)."""
    target = work / "data" / source.name
    shutil.rmtree(target, ignore_errors=True)
    (target / "qrels").mkdir(parents=True)
    for name in ("corpus.jsonl", "queries.jsonl"):
        os.symlink((source / name).resolve(), target / name)
    for qrels in (source / "qrels").iterdir():
        if qrels.name != "test.tsv":
            os.symlink(qrels.resolve(), target / "qrels" / qrels.name)
    lines = (source / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()
    kept, seen = [lines[0]], []
    for line in lines[1:]:
        query = line.split("\t")[0]
        if query not in seen:
            if len(seen) == limit:
                break
            seen.append(query)
        kept.append(line)
    (target / "qrels" / "test.tsv").write_text("\n".join(kept) + "\n", encoding="utf-8")
    return target


@dataclasses.dataclass
class Plan:
    """The suite and recipes after the environment overrides, and which conditions belong to which recipe."""

    suite: Suite
    recipes: list[tuple[str, TrainConfig]]  # (recipe name, config)
    untrained: Path
    base_model: str
    seed: int


def make_plan(args: argparse.Namespace) -> Plan:
    suite = load_suite(args.suite)
    recipes = [(Path(path).stem, load_train_recipe(path)) for path in args.recipes]
    work = Path(args.work).resolve() if args.work else None
    overrides_env = args.model or args.data_root or args.limit_test_queries
    if overrides_env and not args.index:
        raise SystemExit("--model, --data-root and --limit-test-queries need --index (the suite's index is kept)")
    if work is not None:
        work.mkdir(parents=True, exist_ok=True)
    model = None
    if args.model:
        model = str(fp32_copy(Path(args.model).resolve(), work or Path("/tmp/searchkit-rerank-experiment")))

    # datasets: new root and/or trimmed test queries
    sources: dict[Path, Path] = {}
    for dataset in suite.datasets.values():
        new = Path(args.data_root).resolve() / dataset.source.name if args.data_root else dataset.source
        if args.limit_test_queries:
            new = trimmed_dataset(new, work or Path("/tmp/searchkit-rerank-experiment"), args.limit_test_queries)
        sources[dataset.source] = new
    index = Path(args.index).resolve() if args.index else None
    datasets = {
        name: dataclasses.replace(d, source=sources[d.source], index=index or d.index)
        for name, d in suite.datasets.items()
    }

    # outputs: the recipes' own, or under --work
    moved: dict[Path, Path] = {}
    train_set = parse_settings(args.train_set)
    new_recipes = []
    for name, cfg in recipes:
        changes: dict[str, Any] = dict(train_set)
        output = Path(cfg.output).resolve()
        if work is not None:
            changes["output"] = str(work / output.name)
            moved[output] = work / output.name
        if cfg.corpus and Path(cfg.corpus).resolve() in sources:
            changes["corpus"] = str(sources[Path(cfg.corpus).resolve()])
        elif args.data_root and cfg.corpus:
            changes["corpus"] = str(Path(args.data_root).resolve() / Path(cfg.corpus).name)
        if index is not None:
            changes["index"] = str(index)
        if model is not None:
            changes["base_model"] = model
        changes.setdefault("overwrite", not args.skip_train)
        new_recipes.append((name, dataclasses.replace(cfg, **changes)))
    untrained = Path(args.untrained_head).resolve()
    if work is not None:
        moved[untrained] = work / untrained.name
        untrained = moved[untrained]

    rerank_set = parse_settings(args.rerank_set)
    conditions = []
    for cond in suite.conditions:
        changes = {}
        if index is not None:
            changes["index"] = index
        if model is not None and cond.dense is not None:
            changes["dense"] = dataclasses.replace(cond.dense, model=model)
        if cond.rerank is not None:
            rerank = {**config_to_dict(cond.rerank), **rerank_set}
            current = Path(rerank["model"]).resolve()
            rerank["model"] = str(moved.get(current, current))
            changes["rerank"] = config_from_dict(RerankConfig, rerank)  # validates the overrides
            if "depth" in rerank_set:
                changes["k"] = int(rerank_set["depth"])
        conditions.append(dataclasses.replace(cond, **changes))
    if args.only_conditions:
        conditions = [c for c in conditions if any(fnmatch.fnmatchcase(c.name, p) for p in args.only_conditions)]
        if not conditions:
            raise SystemExit(f"no condition of {suite.path} matches {args.only_conditions}")
    suite = dataclasses.replace(suite, datasets=datasets, conditions=tuple(conditions))
    main = new_recipes[0][1]
    return Plan(suite, new_recipes, untrained, main.base_model, main.seed)


# ---------------------------------------------------------------------------------------------- steps


def make_untrained_head(base_model: str, seed: int, folder: Path) -> None:
    """The base model with a fresh one-output head, seeded as ``searchkit.train`` seeds it (its epoch-0 model):
    :func:`searchkit.rerank.load_cross_encoder` with ``fresh_head=True``, saved."""
    import torch

    from searchkit.rerank import load_cross_encoder

    loaded = load_cross_encoder(base_model, dtype=torch.float32, fresh_head=True, seed=seed)
    loaded.model.config.sentence_transformers = {"activation_fn": "torch.nn.modules.linear.Identity"}
    shutil.rmtree(folder, ignore_errors=True)
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    note = {"what": "untrained head: base model + fresh one-output head", "seed": seed, **loaded.identity}
    (folder / "untrained_head.json").write_text(json.dumps(note, indent=2) + "\n", encoding="utf-8")
    logger.info("untrained-head model written to %s (seed %d)", folder, seed)


def owner(cond: Condition, plan: Plan) -> str | None:
    """Which recipe's output (or 'untrained') a reranked condition uses; None for first-stage conditions."""
    if cond.rerank is None:
        return None
    model = Path(cond.rerank.model).resolve()
    if model == plan.untrained.resolve():
        return "untrained"
    for name, cfg in plan.recipes:
        if model == Path(cfg.output).resolve():
            return name
    return "other"


def train_summary(name: str, cfg: TrainConfig, result: Any | None, wall: float | None) -> dict[str, Any]:
    """Training figures from the model card (written whether trained now or before)."""
    card_path = Path(cfg.output) / "searchkit.json"
    card = json.loads(card_path.read_text(encoding="utf-8")) if card_path.is_file() else {}
    final = card.get("final_dev") or {}
    first = next((e["dev"] for e in card.get("dev", []) if "dev" in e), {})
    return {
        "recipe": name,
        "output": cfg.output,
        "loss": cfg.loss,
        "weighting": cfg.weighting,
        "class_weights": [cfg.positive_weight, cfg.negative_weight] if cfg.weighting == "class" else None,
        "epochs_run": result.epochs_run if result else len(card.get("dev", [])) - 1,
        "best_epoch": card.get("best_epoch"),
        "interpolation": card.get("interpolation"),
        "dev_first_stage": first.get("first_stage"),
        "dev_untrained": first.get("reranker"),
        "dev_reranker": final.get("reranker"),
        "dev_interpolated": final.get("interpolated"),
        "train_pairs": card.get("train_pairs"),
        "train_seconds_total": card.get("seconds"),
        "train_pairs_per_second": card.get("train_pairs_per_second"),
        "wall_seconds": round(wall, 1) if wall is not None else None,
        "dev": card.get("dev"),
        "config": config_to_dict(cfg),
    }


def condition_rows(result: SuiteResult) -> list[dict[str, Any]]:
    from searchkit.rerank import read_reranker_card, resolve_fusion

    rows = []
    for cond in result.conditions:
        rerank = cond.settings.get("rerank")
        if rerank is not None:
            used = resolve_fusion(read_reranker_card(rerank["model"]), rerank["interpolation"], rerank["fusion"])
            rerank = {**rerank, "fusion_used": config_to_dict(used) if used else None}
        rows.append(
            {
                "condition": cond.name,
                "mode": cond.mode,
                "k": cond.k,
                "rerank": rerank,
                "metrics": dict(cond.evaluation.aggregate),
                "expected": {c.metric: c.expected for c in cond.comparisons if c.expected is not None},
                "queries": cond.evaluation.num_queries,
                "seconds": round(cond.seconds["search"], 1),
                "run_file": cond.run_file,
            }
        )
    return rows


def single_pass(suite: Suite, conditions: list[Condition], out: Path, name: str, progress: bool) -> list[dict]:
    """Reranked conditions that share first stage and reranker, scored once; each condition's mixing (its
    ``interpolation`` / ``fusion`` settings, as :func:`searchkit.rerank.resolve_fusion` reads them) derived from
    the same logits by :meth:`searchkit.rerank.CrossEncoderReranker.mix`, as ``rerank_batch`` would."""
    from searchkit.evaluate import evaluate
    from searchkit.formats import document_text, read_qrels, read_queries, write_run
    from searchkit.index import Index
    from searchkit.rerank import CrossEncoderReranker, resolve_fusion
    from searchkit.search import Searcher
    from searchkit.suite import restrict_to_split

    groups: dict[str, list[Condition]] = {}
    for cond in conditions:
        assert cond.rerank is not None
        shared = dataclasses.replace(cond.rerank, interpolation=None, fusion=None)
        key = json.dumps(
            [cond.dataset, str(cond.index), cond.mode, config_to_dict(cond.fusion), cond.k, config_to_dict(shared)],
            sort_keys=True,
            default=str,
        )
        groups.setdefault(key, []).append(cond)
    rows = []
    for group in groups.values():
        cond = group[0]
        assert cond.rerank is not None
        dataset = suite.datasets[cond.dataset]
        qrels = read_qrels(dataset.source, dataset.split)
        queries = restrict_to_split(list(read_queries(dataset.source)), qrels)
        index = Index.open(cond.index)
        cfg = dataclasses.replace(cond.rerank, interpolation=None, fusion=None)
        started = time.perf_counter()
        searcher = Searcher(index, mode=cond.mode, fusion=cond.fusion)
        stages = searcher.stages([q.text for q in queries], max(cond.k, cfg.depth))
        first = stages[searcher.mode]
        per_query = [{n: stages[n][i] for n in ("bm25", "dense") if n in stages} for i in range(len(queries))]
        reranker = CrossEncoderReranker.from_config(cfg)
        heads = [hits[: cfg.depth] for hits in first]
        flat_q = [q.text for q, head in zip(queries, heads, strict=True) for _ in head]
        flat_t = [document_text(doc) for head in heads for doc in index.documents([h.doc_id for h in head])]
        scoring = time.perf_counter()
        scores = reranker.score(flat_q, flat_t, show_progress=progress)
        scored = time.perf_counter() - scoring
        logger.info("%s: %d pairs scored in %.1f s (%.1f pairs/s)", cfg.model, len(flat_q), scored,
                    len(flat_q) / max(scored, 1e-9))  # fmt: skip
        for cond in group:
            assert cond.rerank is not None
            reranker.fusion = resolve_fusion(reranker.card, cond.rerank.interpolation, cond.rerank.fusion)
            mixed = reranker.mix(heads, scores, per_query)
            run = {
                q.query_id: (new + hits[cfg.depth :])[: cond.k]
                for q, new, hits in zip(queries, mixed, first, strict=True)
            }
            metrics = list(dict.fromkeys([*suite.metrics, *cond.expected]))
            ids = [q.query_id for q in queries] + list(qrels)
            evaluation = evaluate(run, qrels, metrics, query_ids=ids, unjudged=cond.unjudged, corpus_ids=index.docids)
            trec = out / f"{name}.{cond.name}.trec.gz"
            write_run(run, trec, tag=cond.name)
            rows.append(
                {
                    "condition": cond.name,
                    "mode": cond.mode,
                    "k": cond.k,
                    "rerank": {
                        **config_to_dict(cond.rerank),
                        "fusion_used": config_to_dict(reranker.fusion) if reranker.fusion else None,
                    },
                    "metrics": dict(evaluation.aggregate),
                    "expected": dict(cond.expected),
                    "queries": evaluation.num_queries,
                    "seconds": round(time.perf_counter() - started, 1),
                    "pairs": len(flat_q),
                    "pairs_per_second": round(len(flat_q) / max(scored, 1e-9), 2),
                    "run_file": trec.name,
                    "single_pass": True,
                }
            )
    return rows


# ---------------------------------------------------------------------------------------------- report


def render(summary: dict[str, Any]) -> str:
    lines = []
    if summary["training"]:
        lines.append(
            "| recipe | loss | weighting | epochs (best) | a | dev first stage | dev reranker | "
            "dev interpolated | train pairs | train s | pairs/s | wall s |"
        )
        lines.append("|" + " --- |" * 12)
        for t in summary["training"]:
            if t.get("skipped"):
                lines.append(f"| {t['recipe']} | skipped: {t['skipped']} |" + " |" * 10)
                continue
            lines.append(
                f"| {t['recipe']} | {t['loss']} | {t['weighting']}"
                f"{'' if not t['class_weights'] else ' ' + '/'.join(f'{w:g}' for w in t['class_weights'])} | "
                f"{t['epochs_run']} ({t['best_epoch']}) | {t['interpolation']} | {fmt(t['dev_first_stage'])} | "
                f"{fmt(t['dev_reranker'])} | {fmt(t['dev_interpolated'])} | {t['train_pairs']} | "
                f"{fmt(t['train_seconds_total'], 1)} | {fmt(t['train_pairs_per_second'], 1)} | "
                f"{fmt(t['wall_seconds'], 1)} |"
            )
        lines.append("")
    metrics = list(dict.fromkeys(m for row in summary["conditions"] for m in row["metrics"]))
    lines.append("| condition | k | rerank | " + " | ".join(metrics) + f" | expected {METRIC} |")
    lines.append("|" + " --- |" * (4 + len(metrics)))
    for row in summary["conditions"]:
        rerank = row["rerank"]
        how = "-"
        if rerank:
            model = Path(rerank["model"]).name
            used = rerank.get("fusion_used")
            mix = "alone" if not used else ", ".join(f"{f} {w:.2f}" for f, w in used["weights"].items())
            how = f"{model} top {rerank['depth']}, {mix}"
        values = " | ".join(fmt(row["metrics"].get(m)) for m in metrics)
        lines.append(f"| {row['condition']} | {row['k']} | {how} | {values} | {fmt(row['expected'].get(METRIC))} |")
    return "\n".join(lines)


def gzip_file(path: Path) -> Path:
    """``path`` compressed to ``path.gz`` (the original removed)."""
    import gzip

    target = path.with_name(path.name + ".gz")
    with path.open("rb") as source, gzip.open(target, "wb") as sink:
        shutil.copyfileobj(source, sink)
    path.unlink()
    return target


def fmt(value: Any, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


# ---------------------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started = time.perf_counter()
    plan = make_plan(args)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {
        "command": " ".join([sys.executable, *sys.argv]),
        "environment": environment(),
        "suite": str(plan.suite.path),
        "training": [],
        "conditions": [],
        "phases": [],
    }

    def phase(label: str, conditions: list[Condition]) -> None:
        if not conditions:
            return
        begun = time.perf_counter()
        reranked = [c for c in conditions if c.rerank is not None]
        plain = [c for c in conditions if c.rerank is None]
        if args.single_pass and reranked:
            if plain:
                phase(label + "-first-stage", plain)
            models = list(dict.fromkeys(c.rerank.model for c in reranked if c.rerank is not None))
            for model in models:  # one model at a time, saved after each: a killed run keeps what finished
                group = [c for c in reranked if c.rerank is not None and c.rerank.model == model]
                summary["conditions"].extend(single_pass(plan.suite, group, out, f"{args.name}.{label}", args.progress))
                save(summary, out, args)
        else:
            output = out / f"{args.name}.{label}.json"
            result = run_suite(
                plan.suite, check=False, show_progress=args.progress, only=[c.name for c in conditions], output=output
            )
            print(result.format(), flush=True)
            rows = condition_rows(result)
            for row in rows:  # gzip the TREC runs (read_run and `searchkit score` read .gz): they travel
                if row["run_file"]:
                    row["run_file"] = gzip_file(out / row["run_file"]).name
            summary["conditions"].extend(rows)
        summary["phases"].append({"phase": label, "seconds": round(time.perf_counter() - begun, 1)})
        save(summary, out, args)

    chosen = set(args.only_recipes) if args.only_recipes else None
    by_owner: dict[str | None, list[Condition]] = {}
    for cond in plan.suite.conditions:
        by_owner.setdefault(owner(cond, plan), []).append(cond)
    if by_owner.get("other"):
        names = ", ".join(c.name for c in by_owner["other"])
        logger.warning("conditions %s rerank with a model no recipe here trains: evaluated last as they are", names)

    # 1. first stage: builds or reuses the index the recipes mine from and evaluate dev on
    if not args.no_first_stage:
        phase("first-stage", by_owner.get(None, []))
    # 2. untrained head
    if by_owner.get("untrained") and not (args.skip_train and (plan.untrained / "config.json").is_file()):
        make_untrained_head(plan.base_model, plan.seed, plan.untrained)
    # 3. recipes, each followed by its conditions
    first_cost: float | None = None
    for number, (name, cfg) in enumerate(plan.recipes):
        if chosen is not None and name not in chosen:
            continue
        begun = time.perf_counter()
        elapsed = begun - started
        if args.deadline_s and first_cost is not None and elapsed + first_cost > args.deadline_s:
            why = f"deadline {args.deadline_s:.0f} s: {elapsed:.0f} s gone, the main recipe took {first_cost:.0f} s"
            logger.warning("skipping %s (%s)", name, why)
            summary["training"].append({"recipe": name, "skipped": why})
            save(summary, out, args)
            continue
        result = None
        if not args.skip_train:
            from searchkit.train import train

            logger.info("training %s -> %s", name, cfg.output)
            result = train(cfg, show_progress=args.progress)
        wall = time.perf_counter() - begun if result is not None else None
        summary["training"].append(train_summary(name, cfg, result, wall))
        save(summary, out, args)
        conditions = list(by_owner.get(name, []))
        if number == 0:  # the untrained head is evaluated with the main recipe, after it
            conditions = conditions + by_owner.get("untrained", [])
        phase(name, conditions)
        if number == 0:
            first_cost = time.perf_counter() - begun
    phase("other", by_owner.get("other", []))
    summary["seconds"] = round(time.perf_counter() - started, 1)
    save(summary, out, args)
    print(render(summary), flush=True)
    print(f"\nwhole experiment: {summary['seconds']:.0f} s; results in {out}/{args.name}.json", flush=True)


def environment() -> dict[str, Any]:
    import torch

    from searchkit import __version__

    env: dict[str, Any] = {
        "searchkit": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu_threads": torch.get_num_threads(),
        "host": platform.node(),
    }
    for package in ("transformers", "sentence_transformers", "faiss"):
        try:
            env[package] = __import__(package).__version__
        except ImportError:
            env[package] = None
    return env


def save(summary: dict[str, Any], out: Path, args: argparse.Namespace) -> None:
    """Write the summary JSON and markdown (after every phase, so a killed run keeps what finished) and pack."""
    (out / f"{args.name}.json").write_text(json.dumps(summary, indent=1, default=str) + "\n", encoding="utf-8")
    (out / f"{args.name}.md").write_text(render(summary) + "\n", encoding="utf-8")
    if args.pack:
        pack = Path(args.pack)
        pack.parent.mkdir(parents=True, exist_ok=True)
        tmp = pack.with_name(pack.name + ".tmp")
        with tarfile.open(tmp, "w:gz") as tar:
            for path in sorted(out.glob(f"{args.name}*")):
                tar.add(path, arcname=f"results/{path.name}")
            for entry in summary["training"]:
                folder = Path(entry.get("output") or "/nonexistent")
                for file in ("searchkit.json", "train_log.jsonl", "training_curves.png", "dev_run.trec"):
                    if (folder / file).is_file():
                        tar.add(folder / file, arcname=f"models/{folder.name}/{file}")
        os.replace(tmp, pack)
        for suffix in (".json", ".md"):
            shutil.copyfile(out / f"{args.name}{suffix}", pack.parent / f"{args.name}{suffix}")


if __name__ == "__main__":
    main()
