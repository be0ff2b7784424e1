"""Weights once per node: a hub id resolves to a snapshot in the node's Hugging Face cache.

Every rollout actor and learner rank loads the policy itself. Without a lock, N processes on
one node would each start the same multi-GB download into one cache; with it, the first one
downloads and the others wait and then read the finished copy. Separate nodes have separate
caches, so each node downloads once.
"""

from __future__ import annotations

from pathlib import Path

from filelock import FileLock


def _download(repo_id: str, revision: str | None, cache_dir: Path, local_only: bool) -> str:
    from diffusers import DiffusionPipeline

    # only the files from_pretrained reads (no .ckpt, no Flax weights), not the whole repo
    return DiffusionPipeline.download(
        repo_id, revision=revision, cache_dir=cache_dir, local_files_only=local_only
    )


def node_snapshot(repo_id: str, revision: str | None = None, cache_dir: str | Path | None = None):
    """The local directory of `repo_id` at `revision`, downloaded at most once per cache.

    `cache_dir` defaults to the Hugging Face hub cache (HF_HOME / HF_HUB_CACHE), which is
    node-local unless the runtime env points it elsewhere. Raises OSError or ValueError when
    the model is neither cached nor downloadable."""
    from huggingface_hub.constants import HF_HUB_CACHE

    cache = Path(cache_dir or HF_HUB_CACHE).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    name = repo_id.replace("/", "--")
    with FileLock(str(cache / f"b2-fetch--{name}--{revision or 'main'}.lock")):
        try:  # a waiter finds the copy the lock holder has just finished
            return Path(_download(repo_id, revision, cache, local_only=True))
        except (OSError, ValueError):
            pass
        return Path(_download(repo_id, revision, cache, local_only=False))
