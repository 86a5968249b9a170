"""``searchkit push``: upload a trained model folder to the Hugging Face Hub."""

from __future__ import annotations

from pathlib import Path

import click

from searchkit.models.cards import push_model


@click.command("push", short_help="Upload a trained model folder to the Hugging Face Hub.")
@click.argument("folder", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.argument("repo")
@click.option("--private", is_flag=True, default=None, help="Create the repository private.")
@click.option("--revision", help="Branch to push to (default: the repository's main branch).")
def push_command(folder: Path, repo: str, private: bool | None, revision: str | None) -> None:
    """Upload a model folder `searchkit train` wrote (its card checked first, its README model card written when
    missing) to the Hugging Face Hub repository REPO (owner/name or hf://owner/name; created when missing).
    Python: searchkit.models.cards.push_model(folder, repo)

    The token is huggingface_hub's (HF_TOKEN, or `hf auth login`). Use it back as hf://owner/name wherever
    searchkit takes a model (--rerank, --dense, init_from).
    """
    url = push_model(folder, repo, private=private, revision=revision)
    click.echo(f"{folder}: pushed to {repo} ({url})")
