"""One command for the quality table of issue 8: train what is missing, fit the fusion on dev, evaluate on test,
and the ablations of the reranker recipe beside it.

Steps (each timed; a finished model is reused unless --retrain):
  1. the suite's first-stage rows on the indexes the recipes mine from (builds or reuses them)
  2. the bi-encoder of training/scifact-dense.toml (sentence-transformers MNRL, dev-guarded), when the suite uses it
  3. the cross-encoder of training/scifact.toml (weighted listwise CE, hybrid-mined negatives), then its second
     and third epochs by continual fine-tuning (training/scifact-epoch2.toml --init-from the first, then
     training/scifact-epoch3.toml --init-from the second, its negatives mined from the fine-tuned hybrid): the
     last is the shipped model (--continue-recipe)
  4. the learned fusion of every stage, refitted on the dev queries over the index of the suite's learned-fusion
     row (--fit-index), and the rerank depth chosen on dev among --depth (recall vs cost: the smallest within
     0.002 of the best fused dev score)
  5. the suite (default eval/scifact-quality.toml) on the SciFact TEST split (the test qrels are read only here)
  6. each --ablation recipe: trained if missing, its fusion fitted on dev at the depth step 4 chose, and scored on
     test with the suite's shipped reranked rows (reranker alone, learned fusion), its model swapped in
Then the suite's report, a table of the reranked rows with each recipe's training time and train pairs/s, and
the wall time of every step are printed; the timings and figures are written beside the suite's results.

    python bench/quality.py                          # all of it (CPU: see eval/results/quality_cpu.md)
    python bench/quality.py --check                  # and fail when a row leaves its pinned tolerance
    python bench/quality.py --suite eval/classic-quality.toml --skip-train --no-fit   # out of domain
    # the GPU recipe and its ablations (device set-up and command: eval/results/train_scifact_gpu_PENDING.md)
    python bench/quality.py --suite eval/scifact-rerank.toml --only bm25 dense hybrid-rrf 'gpu-reranker*' \\
        --rerank-recipe training/scifact-gpu.toml --depth 100 \\
        --ablation training/scifact-gpu-pointwise.toml --ablation training/scifact-gpu-pointwise-class.toml

Environment overrides, for a machine that lacks the embedded model package or keeps data elsewhere (the lent
GPU): ``--model DIR`` replaces the base model of every recipe and the dense model of every condition that names a
model rather than a local folder (fp16 weights are first upcast to an fp32 copy under ``--work``: transformers 5
loads a checkpoint in its stored dtype and training needs fp32 master weights); ``--data-root DIR`` replaces the
folder holding the dataset folders (suite sources and recipe corpora); ``--limit-test-queries N`` evaluates the
first N judged test queries (a trimmed copy of the dataset folder under ``--work``). These need ``--index-dir``
(every index of the suite and the recipes moves there), so the checkout's own indexes are never rebuilt;
``--models-dir`` moves every recipe's output (and the rows that use it) likewise, so that a smoke run's models
never stand where a real run would reuse them.
``--set KEY=VALUE`` overrides a setting of every training recipe that has it and ``--rerank-set KEY=VALUE`` one
of every reranked row (values in TOML syntax; ``depth`` also sets ``k``), for smoke runs. ``--deadline-s``
skips an ablation that would end past the deadline; ``--pack FILE.tar.gz`` bundles the results and each trained
model's card and logs after every step (a device returns a few files; a killed run keeps what finished).
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import os
import shutil
import sys
import tarfile
import tempfile
import time
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a source tree (the device has no `pip install -e`)

from benchtools import cpu_description, run_main, versions, write_json

from searchkit.config import (
    DenseTrainConfig,
    RerankConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    load_dense_train_recipe,
    load_train_recipe,
)
from searchkit.evaluate.metrics import canonical_metric
from searchkit.evaluate.tables import format_score, render_table
from searchkit.experiments.suite import SuiteResult, run_suite
from searchkit.experiments.suite_file import Condition, Suite, load_suite, with_reranker
from searchkit.models.cards import MODEL_CARD, read_model_card
from searchkit.training.bi_encoder import train_dense
from searchkit.training.cross_encoder import train
from searchkit.training.fusion import fit_fusion

ROOT = Path(__file__).resolve().parents[1]
ROWS = {"alone": "alone", "+ fusion": "fusion"}  # the shipped reranked rows an ablation is scored with: label, slug
MODEL_FILES = ("searchkit.json", "train_log.jsonl", "training_curves.png", "dev_run.trec")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dense-recipe", default=str(ROOT / "training" / "scifact-dense.toml"))
    parser.add_argument("--rerank-recipe", default=str(ROOT / "training" / "scifact.toml"))
    parser.add_argument(
        "--continue-recipe",
        nargs="*",
        default=[str(ROOT / "training" / f"scifact-epoch{n}.toml") for n in (2, 3)],
        metavar="RECIPE",
        help="continual fine-tuning, in order: the first starts from --rerank-recipe's output, each next from the "
        "one before (default: the second and third epochs); the last one's model is the one the suite ships "
        "(none, or '': --rerank-recipe's model is)",
    )
    parser.add_argument("--ablation", action="append", default=[], metavar="RECIPE", help="repeatable")
    parser.add_argument("--suite", default=str(ROOT / "eval" / "scifact-quality.toml"))
    parser.add_argument("--only", nargs="+", default=None, metavar="PATTERN", help="suite rows to run (fnmatch)")
    parser.add_argument("--fit-index", default=None, help="fusion is fitted here (default: the fusion row's index)")
    parser.add_argument(
        "--depth",
        default="20,30,50",
        help="rerank depths tried on dev (comma-separated): the smallest within 0.002 of the best fused dev score is "
        "kept (searchkit.training.fusion.choose_depth), and the suite's reranked rows must use it",
    )
    parser.add_argument("--retrain", action="store_true", help="train even when a finished model exists")
    parser.add_argument("--skip-train", action="store_true", help="never train (the models must exist)")
    parser.add_argument("--no-fit", action="store_true", help="keep the fusion the cards already have")
    parser.add_argument("--check", action="store_true", help="exit 1 when a row leaves its tolerance")
    parser.add_argument("--output", default=None, help="the suite's results JSON (default: in <suite dir>/results/)")
    parser.add_argument("--model", default=None, help="local copy of the base and dense model (see above)")
    parser.add_argument("--data-root", default=None, help="folder holding the dataset folders (e.g. scifact/)")
    parser.add_argument("--index-dir", default=None, help="every index goes here, under its own folder name")
    parser.add_argument("--models-dir", default=None, help="every trained model goes here (smoke runs)")
    parser.add_argument("--limit-test-queries", type=int, default=None, help="smoke runs: first N test queries")
    parser.add_argument("--set", dest="train_set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--rerank-set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "searchkit-quality"), help="copies")
    parser.add_argument("--deadline-s", type=float, default=None, help="skip ablations that would overrun it")
    parser.add_argument("--pack", default=None, metavar="FILE.tar.gz", help="bundle results and model cards")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    if (args.model or args.data_root or args.limit_test_queries) and not args.index_dir:
        parser.error("--model, --data-root and --limit-test-queries need --index-dir (the checkout's indexes stay)")
    return args


# ---------------------------------------------------------------------------------------------- the plan


@dataclasses.dataclass
class Plan:
    """The suite and the recipes after the environment overrides."""

    suite: Suite
    dense: DenseTrainConfig
    reranker: TrainConfig
    ablations: list[tuple[str, TrainConfig]]  # (recipe stem, its config)
    continued: list[TrainConfig] = dataclasses.field(default_factory=list)  # each from the one before; last ships

    @property
    def shipped(self) -> TrainConfig:
        """The recipe whose model the suite's reranked rows use and whose fusion is fitted."""
        return self.continued[-1] if self.continued else self.reranker


def settings(items: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` items, values in TOML syntax (``2``, ``1e-4``, ``"cpu"``, ``true``; bare words are strings)."""
    found: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise SystemExit(f"expected KEY=VALUE, got {item!r}")
        try:
            found[key.strip()] = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            found[key.strip()] = text.strip()
    return found


def make_plan(args: argparse.Namespace) -> Plan:
    suite = load_suite(args.suite)
    if args.only:
        chosen = [c for c in suite.conditions if any(fnmatch.fnmatchcase(c.name, p) for p in args.only)]
        if not chosen:
            raise SystemExit(f"no row of {args.suite} matches {args.only}")
        suite = dataclasses.replace(suite, conditions=tuple(chosen))
    recipes: list[Any] = [load_dense_train_recipe(args.dense_recipe), load_train_recipe(args.rerank_recipe)]
    recipes += [load_train_recipe(path) for path in args.ablation]
    chain = continue_recipes(args)
    recipes += [load_train_recipe(path) for path in chain]
    work = Path(args.work).resolve()
    model = fp32_copy(Path(args.model).resolve(), work) if args.model else None
    sources: dict[Path, Path] = {}
    for dataset in suite.datasets.values():
        new = Path(args.data_root).resolve() / dataset.source.name if args.data_root else dataset.source
        if args.limit_test_queries:
            new = trimmed_dataset(new, work, args.limit_test_queries, dataset.split)
        sources[dataset.source] = new

    def moved(path: str | Path, folder: str | None = args.index_dir) -> Path:
        return Path(folder).resolve() / Path(path).name if folder else Path(path)

    outputs = {Path(r.output).resolve(): str(moved(r.output, args.models_dir)) for r in recipes}

    def data(path: str | None) -> str | None:
        if path is None or not (args.data_root or args.limit_test_queries):
            return path
        resolved = Path(path).resolve()
        if resolved in sources:
            return str(sources[resolved])
        return str(Path(args.data_root).resolve() / resolved.name) if args.data_root else path

    overrides = settings(args.train_set)
    unknown = [k for k in overrides if not any(k in {f.name for f in dataclasses.fields(r)} for r in recipes)]
    if unknown:
        raise SystemExit(f"--set: no recipe has the setting(s) {', '.join(unknown)}")
    changed = []
    for recipe in recipes:
        names = {f.name for f in dataclasses.fields(recipe)}
        change: dict[str, Any] = {k: v for k, v in overrides.items() if k in names}
        change.update({k: data(getattr(recipe, k)) for k in ("corpus", "queries", "qrels")})
        change["index"] = recipe.index and str(moved(recipe.index))
        change["output"] = outputs[Path(recipe.output).resolve()]
        if model is not None:
            change["base_model"] = str(model)
        changed.append(dataclasses.replace(recipe, **change))

    rerank_set = settings(args.rerank_set)
    conditions = []
    for cond in suite.conditions:
        edits: dict[str, Any] = {"index": moved(cond.index)}
        if cond.dense is not None:
            dense = outputs.get(Path(cond.dense.model).resolve(), cond.dense.model)
            if model is not None and not Path(cond.dense.model).is_absolute():
                dense = str(model)
            edits["dense"] = dataclasses.replace(cond.dense, model=dense)
        if cond.rerank is not None:  # validated as a RerankConfig
            rerank = {**config_to_dict(cond.rerank), **rerank_set}
            rerank["model"] = outputs.get(Path(cond.rerank.model).resolve(), cond.rerank.model)
            edits["rerank"] = config_from_dict(RerankConfig, rerank)
            edits["k"] = int(rerank_set.get("depth", cond.k))
        conditions.append(dataclasses.replace(cond, **edits))
    datasets = {
        name: dataclasses.replace(d, source=sources[d.source], index=d.index and moved(d.index))
        for name, d in suite.datasets.items()
    }
    suite = dataclasses.replace(suite, datasets=datasets, conditions=tuple(conditions))
    stems = [Path(path).stem for path in args.ablation]
    continued: list[TrainConfig] = []
    for cfg in changed[len(changed) - len(chain) :]:
        parent = continued[-1] if continued else changed[1]
        continued.append(dataclasses.replace(cfg, init_from=parent.output))
    changed = changed[: len(changed) - len(chain)]
    return Plan(suite, changed[0], changed[1], list(zip(stems, changed[2:], strict=True)), continued)


def continue_recipes(args: argparse.Namespace) -> list[str]:
    """The --continue-recipe chain, in training order ('' entries dropped)."""
    return [path for path in args.continue_recipe if path]


def fp32_copy(model: Path, work: Path) -> Path:
    """``model`` itself when its weights are fp32, else a copy under ``work`` with every float tensor upcast."""
    import torch
    from safetensors.torch import load_file, save_file

    weights = model / "model.safetensors"
    if not weights.is_file():
        return model
    tensors = load_file(str(weights))
    if all(t.dtype == torch.float32 for t in tensors.values() if t.is_floating_point()):
        return model
    target = work / f"{model.name}-fp32"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(model, target, ignore=shutil.ignore_patterns("model.safetensors"))
    upcast = {k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}
    save_file(upcast, str(target / "model.safetensors"), metadata={"format": "pt"})
    print(f"{model} holds non-fp32 weights: using the fp32 copy {target}", flush=True)
    return target


def trimmed_dataset(source: Path, work: Path, limit: int, split: str = "test") -> Path:
    """A copy of a BEIR folder whose qrels/<split>.tsv keeps its first ``limit`` queries (everything else linked)."""
    target = work / "data" / source.name
    shutil.rmtree(target, ignore_errors=True)
    (target / "qrels").mkdir(parents=True)
    for name in ("corpus.jsonl", "queries.jsonl"):
        os.symlink((source / name).resolve(), target / name)
    for qrels in (source / "qrels").iterdir():
        if qrels.name != f"{split}.tsv":
            os.symlink(qrels.resolve(), target / "qrels" / qrels.name)
    lines = (source / "qrels" / f"{split}.tsv").read_text(encoding="utf-8").splitlines()
    kept, seen = [lines[0]], set[str]()
    for line in lines[1:]:
        query = line.split("\t")[0]
        if query not in seen and len(seen) == limit:
            break
        seen.add(query)
        kept.append(line)
    (target / "qrels" / f"{split}.tsv").write_text("\n".join(kept) + "\n", encoding="utf-8")
    return target


# ---------------------------------------------------------------------------------------------- steps


def shipped_rows(suite: Suite, model: str) -> dict[str, Condition]:
    """The suite's first rows reranking with ``model``: ``alone`` (reranker scores only: no interpolation, or a
    weight of 1) and ``+ fusion`` (the card's learned fusion: interpolation and fusion ``auto``)."""
    rows: dict[str, Condition] = {}
    for cond in suite.conditions:
        rerank = cond.rerank
        if rerank is None or Path(rerank.model).resolve() != Path(model).resolve():
            continue
        if rerank.interpolation is None or rerank.interpolation == 1.0:
            rows.setdefault("alone", cond)
        elif rerank.interpolation == "auto" and rerank.fusion == "auto":
            rows.setdefault("+ fusion", cond)
    return rows


def build_indexes(suite: Suite, paths: set[Path], done: set[str], progress: bool) -> None:
    """Build (or reuse) the indexes at ``paths`` by running the suite's first-stage rows on them whose dense model
    exists already (a fine-tuned encoder may be trained later); rows in ``done`` ran before and are skipped."""
    rows = [
        c.name
        for c in suite.conditions
        if c.rerank is None
        and c.index in paths
        and c.name not in done
        and (c.dense is None or not Path(c.dense.model).is_absolute() or Path(c.dense.model).exists())
    ]
    if rows:
        run_suite(suite, check=False, only=rows, write=False, show_progress=progress)
        done.update(rows)


def needs_training(cfg: Any, args: argparse.Namespace) -> bool:
    """Whether this run trains ``cfg``: its finished model is missing (or --retrain), unless --skip-train."""
    return not args.skip_train and (args.retrain or not (Path(cfg.output) / MODEL_CARD).is_file())


def ensure_trained(
    name: str, cfg: Any, run: Callable[..., Any], args: argparse.Namespace, force: bool = False
) -> dict[str, Any] | None:
    """Train ``cfg`` when :func:`needs_training` (or ``force``). Returns its training time (s) and train pairs/s,
    from this run's result or else from its card, or None when the model is missing."""
    if not force and not needs_training(cfg, args):
        done = (Path(cfg.output) / MODEL_CARD).is_file()
        print(f"{name}: using {cfg.output}" + ("" if done else " (MISSING)"), flush=True)
        if not done:
            return None
        card = read_model_card(cfg.output)
        seconds = card.get("seconds") or (card.get("timings") or {}).get("total_seconds")
        return {"trained": "before", "seconds": seconds, "pairs_per_second": card.get("train_pairs_per_second")}
    result = run(dataclasses.replace(cfg, overwrite=True), show_progress=args.progress)
    print(
        f"{name}: {result.seconds:.0f} s, {result.train_pairs} pairs at {result.pairs_per_second:.1f} pairs/s",
        flush=True,
    )
    return {
        "trained": "now",
        "seconds": round(result.seconds, 1),
        "pairs_per_second": round(result.pairs_per_second, 2),
    }


def table(metrics: Sequence[str], rows: list[tuple[str, dict[str, float] | None, dict[str, Any] | None]]) -> str:
    """One line per reranked row: its metrics, then the training time and train pairs/s of the model behind it."""
    body = [["row", *(canonical_metric(m) for m in metrics), "train s", "pairs/s"]]
    for label, scores, figures in rows:
        seconds, rate = (figures or {}).get("seconds"), (figures or {}).get("pairs_per_second")
        body.append(
            [
                label,
                *(format_score((scores or {}).get(m)) for m in metrics),
                "-" if seconds is None else f"{seconds:.0f}",
                "-" if rate is None else f"{rate:.1f}",
            ]
        )
    return render_table(body)


def pack(path: str | None, files: Sequence[Path]) -> None:
    """Bundle ``files`` into ``path`` (.tar.gz), replacing it atomically; results under results/, a model's
    files under models/<folder>/."""
    if not path:
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    with tarfile.open(partial, "w:gz") as tar:
        for file in files:
            if file.is_file():
                where = f"models/{file.parent.name}" if file.name in MODEL_FILES else "results"
                tar.add(file, arcname=f"{where}/{file.name}")
    os.replace(partial, target)


def result_files(result: SuiteResult) -> list[Path]:
    """The JSON a suite run wrote and its TREC runs."""
    assert result.output is not None
    out = Path(result.output)
    return [out, *(out.with_name(c.run_file) for c in result.conditions if c.run_file)]


# ---------------------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    plan = make_plan(args)
    suite = plan.suite
    seconds: dict[str, float] = {}
    figures: dict[str, dict[str, Any] | None] = {}
    files: list[Path] = []
    outputs = [plan.dense.output, plan.reranker.output, *(cfg.output for _, cfg in plan.ablations)]
    outputs += [cfg.output for cfg in plan.continued]
    model_files = [Path(output) / name for output in outputs for name in MODEL_FILES]
    main_rows = shipped_rows(suite, plan.shipped.output)
    fit_index = Path(args.fit_index).resolve() if args.fit_index else None
    if fit_index is None and "+ fusion" in main_rows:
        fit_index = main_rows["+ fusion"].index
    if not args.no_fit and fit_index is None:
        raise SystemExit(f"{args.suite} has no learned-fusion row with {plan.shipped.output}: give --fit-index")
    if args.ablation and not main_rows:
        raise SystemExit(f"{args.suite} has no reranked row with {plan.shipped.output}: ablations copy those rows")

    # 1-3: indexes, then the models (an index the recipes mine from must exist before they train)
    dense_output = Path(plan.dense.output).resolve()
    uses_dense = any(c.dense is not None and Path(c.dense.model).resolve() == dense_output for c in suite.conditions)
    recipes: list[Any] = [
        plan.reranker,
        *plan.continued,
        *([plan.dense] if uses_dense else []),
        *(c for _, c in plan.ablations),
    ]
    wanted = {Path(cfg.index).resolve() for cfg in recipes if cfg.index and needs_training(cfg, args)}
    wanted |= {fit_index} if fit_index and not args.no_fit else set()
    done: set[str] = set()
    begun = time.perf_counter()
    build_indexes(suite, wanted, done, args.progress)
    seconds["index"] = time.perf_counter() - begun
    dense_stem, stem = Path(args.dense_recipe).stem, Path(args.rerank_recipe).stem
    if uses_dense:
        figures[dense_stem] = ensure_trained("train-dense", plan.dense, train_dense, args)
        begun = time.perf_counter()
        build_indexes(suite, wanted, done, args.progress)  # the rows that needed the encoder just trained
        seconds["index"] += time.perf_counter() - begun
    else:
        print(f"train-dense: skipped, no row of {args.suite} uses {plan.dense.output}", flush=True)
    figures[stem] = ensure_trained("train-reranker", plan.reranker, train, args)
    trained = [dense_stem, stem]
    for path, cfg in zip(continue_recipes(args), plan.continued, strict=True):
        cont_stem = Path(path).stem  # retrained whenever its parent just was: it starts from that model
        parent_new = (figures[stem] or {}).get("trained") == "now"
        figures[cont_stem] = ensure_trained("train-continued", cfg, train, args, force=parent_new)
        trained.append(cont_stem)
        stem = cont_stem  # the shipped rows are the last continued model's
    for name in trained:
        if (figures.get(name) or {}).get("trained") == "now":
            seconds[f"train-{name}"] = figures[name]["seconds"]  # type: ignore[index]
    pack(args.pack, model_files)

    # 4: the learned fusion and the rerank depth, on dev
    depth = None
    if not args.no_fit:
        assert fit_index is not None
        begun = time.perf_counter()
        depths = [int(part) for part in args.depth.split(",")]
        model, report = fit_fusion(plan.shipped.output, fit_index, depth=depths, mode="hybrid")
        seconds["fit-fusion"] = time.perf_counter() - begun
        depth = model.depth
        print(f"fusion fitted on dev ({seconds['fit-fusion']:.0f} s): depth {model.depth}, {model.weights}", flush=True)
        for each, row in report.get("depths", {}).items():
            print(f"  dev depth {each}: first-stage recall {row['first_stage_recall']:.4f}, fused {row['fused']:.4f}")
        shipped = Path(plan.shipped.output).resolve()  # rows of other models (earlier epochs) keep their depth
        pinned = {
            c.rerank.depth
            for c in suite.conditions
            if c.rerank is not None and c.rerank.depth and Path(c.rerank.model).resolve() == shipped
        }
        if pinned and pinned != {model.depth}:
            sys.exit(f"dev chose rerank depth {model.depth} but {args.suite} reranks at {sorted(pinned)}: update it")

    # 5: the suite on test
    begun = time.perf_counter()
    result = run_suite(suite, check=args.check, show_progress=args.progress, output=args.output)
    seconds["evaluate"] = time.perf_counter() - begun
    print(result.format(), flush=True)
    assert result.output is not None
    output = Path(result.output)
    summary_path = output.with_suffix(".timings.json")
    summary: dict[str, Any] = {
        "seconds": seconds,
        "machine": cpu_description(),
        "versions": versions("torch", "transformers", "sentence-transformers", "faiss-cpu"),
        "rerank_depth": depth,
        "training": figures,
        "ablations": {},
    }
    files += [*result_files(result), summary_path]
    write_json(summary_path, summary)
    pack(args.pack, files + model_files)
    scores = {c.name: dict(c.evaluation.aggregate) for c in result.conditions}
    lines = [(f"{stem} {label} ({c.name})", scores.get(c.name), figures[stem]) for label, c in main_rows.items()]

    # 6: the ablations, each costing about what the main reranker did (its training, fit and rows)
    cost = ((figures[stem] or {}).get("seconds") or 0.0) + seconds.get("fit-fusion", 0.0)
    cost += sum(c.seconds["search"] for c in result.conditions if c.name in {r.name for r in main_rows.values()})
    for name, cfg in plan.ablations:
        labels = [f"ablation: {name} {label}" for label in main_rows]
        elapsed = time.perf_counter() - started
        if args.deadline_s is not None and elapsed + cost > args.deadline_s:
            why = f"deadline {args.deadline_s:.0f} s: {elapsed:.0f} s gone, the last reranker took {cost:.0f} s"
            print(f"ablation {name}: skipped ({why})", flush=True)
            summary["ablations"][name] = {"skipped": why}
            lines += [(f"{label} (skipped: deadline)", None, None) for label in labels]
            continue
        begun = time.perf_counter()
        figures[name] = ensure_trained(f"train-{name}", cfg, train, args)
        if figures[name] is None:
            lines += [(f"{label} (missing)", None, None) for label in labels]
            continue
        if not args.no_fit:
            assert fit_index is not None
            fit_fusion(cfg.output, fit_index, depth=depth, mode="hybrid")
        derived = [with_reranker(c, cfg.output, f"ablation-{name}-{ROWS[label]}") for label, c in main_rows.items()]
        ablated = run_suite(
            dataclasses.replace(suite, conditions=tuple(derived)),
            check=False,
            output=output.with_name(f"{output.stem}.ablation-{name}.json"),
            show_progress=args.progress,
        )
        got = {c.name: dict(c.evaluation.aggregate) for c in ablated.conditions}
        lines += [(label, got[c.name], figures[name]) for label, c in zip(labels, derived, strict=True)]
        cost = seconds[f"ablation-{name}"] = time.perf_counter() - begun
        summary["ablations"][name] = got
        files += result_files(ablated)
        write_json(summary_path, summary)
        pack(args.pack, files + model_files)

    seconds["total"] = time.perf_counter() - started
    write_json(summary_path, summary)
    pack(args.pack, files + model_files)
    if lines:
        print(f"\nreranked rows of {suite.name}, with the training time and train pairs/s of their model")
        print(table(suite.metrics, lines))
    print("wall time (s): " + ", ".join(f"{name} {value:.0f}" for name, value in seconds.items()))
    if args.check and not result.passed:
        sys.exit(1)


if __name__ == "__main__":
    run_main(main)
