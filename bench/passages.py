"""Passages vs truncation (issue 23, item 3): the table of eval/results/passages_cpu.md from `searchkit eval
eval/passages.toml` result files (one per collection, or one for all), with per-query wins and losses and a paired
randomization test of each nDCG@10 difference.

    flock /tmp/searchkit-heavy.lock searchkit eval eval/passages.toml --only medline-dense-cut ... -o medline.json
    python bench/passages.py medline.json cranfield.json ... --json eval/results/passages_cpu.json \
        --markdown eval/results/passages_cpu.md

    python bench/passages.py --count ../shared/datasets/{medline,cranfield,cisi,vaswani}   # documents cut, passages

The "cut" baselines of a collection come from its own ``-cut`` conditions when the result files hold them, else from
the stored runs of eval/classic.toml's run (``--classic eval/results/classic-20261123-133741``: the same index
settings, documents cut at 256 tokens, fp32, Flat), scored here against the collection's test qrels over every query
of its queries.jsonl, unjudged ones scored 0, as the suite scores them.

Conditions are named ``<collection>-<mode>-<setting>`` (``cut``: documents cut to the model's length; ``p128``:
MaxP over 128-token passages). Nothing is encoded here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

METRIC = "nDCG@10"
PERMUTATIONS = 10_000


def paired_p(a: np.ndarray, b: np.ndarray, seed: int = 0) -> float:
    """Two-sided p-value of mean(b - a) under random sign flips of the per-query differences."""
    diff = b - a
    if not np.any(diff):
        return 1.0
    rng = np.random.default_rng(seed)
    signs = rng.choice([-1.0, 1.0], size=(PERMUTATIONS, len(diff)))
    null = np.abs((signs * diff).mean(axis=1))
    return float((np.count_nonzero(null >= abs(diff.mean()) - 1e-12) + 1) / (PERMUTATIONS + 1))


def classic_condition(prefix: str, name: str, datasets: Path) -> dict[str, Any] | None:
    """A ``<collection>-<mode>-cut`` condition from eval/classic.toml's stored run ``<prefix>.<collection>-<mode>.trec``
    (per-query and aggregate scores, as a suite result holds them), or None without that file."""
    from searchkit.evaluate import evaluate
    from searchkit.formats import read_qrels, read_queries, read_run

    collection, mode = name.removesuffix("-cut").rsplit("-", 1)
    path = Path(f"{prefix}.{collection}-{mode}.trec")
    if not path.is_file():
        return None
    source = datasets / collection
    queries = [query.query_id for query in read_queries(source)]
    result = evaluate(
        read_run(path), read_qrels(source, "test"), ["nDCG@10", "RR@10", "R@100", "AP"], query_ids=queries
    )
    per_query = {qid: dict(values) for qid, values in result.per_query.items()}
    return {
        "name": name,
        "run_file": str(path),
        "evaluation": {"aggregate": dict(result.aggregate), "per_query": per_query},
    }


def rows(results: list[dict[str, Any]], classic: str | None = None, datasets: Path = Path(".")) -> list[dict[str, Any]]:
    conditions: dict[str, dict[str, Any]] = {}
    for result in results:
        for condition in result["conditions"]:
            conditions[condition["name"]] = condition
    if classic is not None:  # baselines not measured in these files: eval/classic.toml's stored runs
        for name in list(conditions):
            for setting in ("p128", "p254"):
                if name.endswith(f"-{setting}"):
                    cut = name.removesuffix(f"-{setting}") + "-cut"
                    found = conditions.get(cut) or classic_condition(classic, cut, datasets)
                    if found is not None:
                        conditions[cut] = found
    table = []
    for name, cut in conditions.items():
        if not name.endswith("-cut"):
            continue
        base = name.removesuffix("-cut")
        for setting in ("p128", "p254"):
            other = conditions.get(f"{base}-{setting}")
            if other is None:
                continue
            collection, mode = base.rsplit("-", 1)
            queries = sorted(cut["evaluation"]["per_query"])
            a = np.array([cut["evaluation"]["per_query"][q][METRIC] for q in queries])
            b = np.array([other["evaluation"]["per_query"].get(q, {}).get(METRIC, 0.0) for q in queries])
            table.append(
                {
                    "collection": collection,
                    "mode": mode,
                    "setting": setting,
                    "queries": len(queries),
                    "cut": cut["evaluation"]["aggregate"],
                    "passages": other["evaluation"]["aggregate"],
                    "delta": float(b.mean() - a.mean()),
                    "wins": int(np.count_nonzero(b > a + 1e-12)),
                    "losses": int(np.count_nonzero(b < a - 1e-12)),
                    "p": paired_p(a, b),
                }
            )
    return table


def markdown(table: list[dict[str, Any]]) -> str:
    lines = [
        f"| collection | mode | setting | queries | {METRIC} cut | {METRIC} MaxP | delta | wins / losses | p | "
        "R@100 cut | R@100 MaxP |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in table:
        lines.append(
            f"| {row['collection']} | {row['mode']} | {row['setting']} | {row['queries']} | "
            f"{row['cut'][METRIC]:.4f} | {row['passages'][METRIC]:.4f} | {row['delta']:+.4f} | "
            f"{row['wins']} / {row['losses']} | {row['p']:.3f} | {row['cut']['R@100']:.4f} | "
            f"{row['passages']['R@100']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def counts(corpus: Path, tokens: int = 128, stride: int = 64, max_length: int = 256) -> dict[str, Any]:
    """How many documents of ``corpus`` the embedded MiniLM cuts at ``max_length`` and how many passages of
    ``tokens`` every ``stride`` they make (its tokenizer only, no model)."""
    from searchkit.config import DEFAULT_DENSE_MODEL
    from searchkit.formats import document_text, read_corpus
    from searchkit.index.measure import token_counts
    from searchkit.text.passages import passage_spans

    texts = [document_text(doc) for doc in read_corpus(corpus)]
    lengths, specials = token_counts(DEFAULT_DENSE_MODEL, texts)
    return {
        "corpus": corpus.name,
        "documents": len(texts),
        "cut_at_max_length": sum(n > max_length - specials for n in lengths),
        "mean_tokens": round(sum(lengths) / max(1, len(lengths)), 1),
        "passages": sum(len(passage_spans(n, tokens, stride)) for n in lengths),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="`searchkit eval eval/passages.toml -o` files")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--count", action="store_true", help="RESULTS are corpora: count cut documents, passages")
    parser.add_argument("--classic", help="stored eval/classic.toml runs (path prefix) for baselines not in RESULTS")
    parser.add_argument("--datasets", type=Path, default=Path("../shared/datasets"), help="BEIR folders (--classic)")
    args = parser.parse_args()
    if args.count:
        for corpus in args.results:
            print(json.dumps(counts(corpus)))
        return
    results = [json.loads(path.read_text(encoding="utf-8")) for path in args.results]
    table = rows(results, args.classic, args.datasets)
    text = markdown(table)
    print(text, end="")
    if args.json:
        kept = {"metric": METRIC, "permutations": PERMUTATIONS, "sources": [str(p) for p in args.results]}
        runs = [{key: r[key] for key in ("created", "git_commit", "searchkit_version")} for r in results]
        document = {**kept, "runs": runs, "rows": table, "results": results}  # the suite results, per query too
        args.json.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    if args.markdown:
        args.markdown.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
