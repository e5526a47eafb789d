"""Push checkpoints, the tokenizer and model cards to the Hugging Face Hub without ever stopping training.

Checkpoint pushes run in the background on `HfApi.run_as_future` (one worker thread, so commits land in order);
a failed push is retried with backoff, then logged and given up, never raised into the training loop. Only the
from_pretrained files of a folder are pushed (safetensors weights, config, tokenizer, the resolved
training_args.yaml, the card and its image): optimizer, scheduler and RNG state stay local.
The token comes from `HF_TOKEN` or the stored login (`hf auth login`) and is never printed or logged.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import httpx2  # huggingface_hub's HTTP client: its connection errors are not OSErrors
from accelerate.logging import get_logger
from huggingface_hub import CommitInfo, CommitOperationAdd, HfApi, ModelCard, get_token
from huggingface_hub.errors import HfHubHTTPError

from bert_recipes.errors import UsageError

logger = get_logger(__name__)
T = TypeVar("T")

HUB_STRATEGIES = ("end", "every_save", "checkpoint")
# top-level files of a save_pretrained folder that make a loadable repo, plus the run's config, card and logs
PUSHED_FILES = ("*.json", "*.safetensors", "*.txt", "*.yaml", "README.md", "*.png", "metrics.jsonl")
# training state never leaves the machine, whatever the patterns above let through
NEVER_PUSHED = ("*.bin", "*.pt", "*.pth", "*.pkl", "*.ckpt", "optimizer*", "scheduler*", "random_states*", "rng_state*")
REPO_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_-])?"
REPO_ID = re.compile(rf"^(?:{REPO_NAME}/)?{REPO_NAME}$")
STAGING_DIR = ".hub-staging"


@dataclass
class HubConfig:
    push_to_hub: bool = field(default=False, metadata={"help": "Push the model (and checkpoints) to the Hub."})
    hub_model_id: str | None = field(
        default=None, metadata={"help": "Repo id, 'name' (under the token's user) or 'namespace/name'."}
    )
    hub_private_repo: bool = field(default=False, metadata={"help": "Create the repo as private."})
    hub_revision: str | None = field(
        default=None, metadata={"help": "Branch to push to (created from main if missing); default main."}
    )
    hub_strategy: str = field(
        default="every_save",
        metadata={
            "help": "end: push once after training; every_save: each checkpoint replaces the model at the repo "
            "root; checkpoint: as every_save, and each checkpoint also kept in checkpoint-STEP/ (load it with "
            "subfolder=)."
        },
    )
    hub_tag_checkpoints: bool = field(
        default=False, metadata={"help": "Tag each pushed checkpoint step-N (load it with revision='step-N')."}
    )
    hub_retries: int = field(default=4, metadata={"help": "Attempts per push before giving up on it."})
    hub_retry_delay: float = field(default=2.0, metadata={"help": "Seconds before the first retry; doubles each time."})


def check_hub_access(config: HubConfig) -> str | None:
    """Validate the repo id, the token and write access before any training; returns the full repo id.

    Creates the repo (and the branch) when missing. Returns None when not pushing.
    """
    if not config.push_to_hub:
        return None
    check_hub_options(config)
    if get_token() is None:
        raise UsageError("--push_to_hub needs a Hub token: set HF_TOKEN or run `hf auth login`")
    api = HfApi()
    me = _call_hub(api.whoami, api, config.hub_model_id)
    repo_id = full_repo_id(config.hub_model_id, me["name"])
    _call_hub(lambda: api.create_repo(repo_id, private=config.hub_private_repo, exist_ok=True), api, repo_id)
    # create_repo(exist_ok=True) also succeeds for someone else's existing public repo: check the namespace too
    namespaces = {me["name"], *(org["name"] for org in me.get("orgs", []))}
    if repo_id.split("/")[0] not in namespaces:
        raise UsageError(
            f"no write access to '{repo_id}' (403): the token belongs to '{me['name']}'; push to "
            f"'{me['name']}/{repo_id.split('/')[1]}' or to an organization you belong to"
        )
    if config.hub_revision:
        _call_hub(lambda: api.create_branch(repo_id, branch=config.hub_revision, exist_ok=True), api, repo_id)
    return repo_id


def check_hub_options(config: HubConfig) -> None:
    """The checks that need no network: strategy, repo id shape, retry settings."""
    if config.hub_strategy not in HUB_STRATEGIES:
        raise UsageError(f"--hub_strategy '{config.hub_strategy}' is not one of {', '.join(HUB_STRATEGIES)}")
    repo_id = config.hub_model_id
    if not repo_id or not REPO_ID.match(repo_id) or ".." in repo_id or "--" in repo_id:
        raise UsageError(
            f"--hub_model_id '{repo_id}' is not a repo id: use 'name' or 'namespace/name' (letters, digits, "
            "'-', '_', '.'; no '--' or '..')"
        )
    if config.hub_retries < 1:
        raise UsageError(f"--hub_retries {config.hub_retries} must be at least 1")


def full_repo_id(hub_model_id: str, user: str) -> str:
    return hub_model_id if "/" in hub_model_id else f"{user}/{hub_model_id}"


def _call_hub(call: Callable[[], T], api: HfApi, repo_id: str | None) -> T:
    """Run one up-front Hub call, turning what can go wrong into one line that says what to do."""
    try:
        return call()
    except HfHubHTTPError as err:
        status = getattr(err.response, "status_code", None)
        if status == 401:
            raise UsageError("the Hub rejected the token (401): set a valid HF_TOKEN or run `hf auth login`") from None
        if status == 403:
            raise UsageError(
                f"no write access to '{repo_id}' (403): push to your own namespace or ask its owner for write access"
            ) from None
        raise UsageError(f"the Hub at {api.endpoint} answered {status} for '{repo_id}': retry later") from None
    except (OSError, httpx2.HTTPError) as err:  # connection refused, DNS, timeouts
        raise UsageError(
            f"cannot reach the Hub at {api.endpoint} ({_reason(err)}): check the network (and HF_ENDPOINT if set)"
        ) from None


def _reason(err: BaseException) -> str:
    """The error's type and first line, for logs; the token is masked should a server ever echo it."""
    first_line = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
    token = get_token()
    if token:
        first_line = first_line.replace(token, "***")
    return f"{type(err).__name__}: {first_line}" if first_line else type(err).__name__


def model_files(folder: str | Path) -> list[Path]:
    """The top-level files of a folder that belong on the Hub (never training state)."""
    root = Path(folder)
    if (root / "model" / "config.json").is_file() and not (root / "config.json").is_file():
        root = root / "model"
    return sorted(
        p
        for p in root.iterdir()
        if p.is_file()
        and any(fnmatch.fnmatch(p.name, pattern) for pattern in PUSHED_FILES)
        and not any(fnmatch.fnmatch(p.name, pattern) for pattern in NEVER_PUSHED)
    )


def commit_files(
    api: HfApi, repo_id: str, files: list[Path], message: str, revision: str | None, prefixes: tuple[str, ...] = ("",)
) -> CommitInfo:
    """One commit adding `files` under each prefix ('' is the repo root)."""
    operations = [
        CommitOperationAdd(path_in_repo=f"{prefix}{path.name}", path_or_fileobj=str(path))
        for prefix in prefixes
        for path in files
    ]
    return api.create_commit(repo_id, operations, commit_message=message, revision=revision)


def with_retries(action: Callable[[], T], what: str, config: HubConfig) -> T:
    """Run `action`, retrying with doubling delays; each failure is logged with its reason, the last one raised.

    Refusals (401, 403, 404) are raised at once: waiting does not change them.
    """
    delay = config.hub_retry_delay
    for attempt in range(1, config.hub_retries):
        try:
            return action()
        except Exception as err:
            if getattr(getattr(err, "response", None), "status_code", None) in (401, 403, 404):
                raise
            logger.warning(f"{what} failed ({_reason(err)}); retry {attempt}/{config.hub_retries - 1} in {delay:g}s")
            time.sleep(delay)
            delay *= 2
    return action()


class CheckpointPusher:
    """Pushes checkpoints in the background during training and the final model at the end (main process only)."""

    def __init__(self, config: HubConfig, output_dir: str | Path, repo_id: str | None = None):
        self.config, self.output_dir = config, Path(output_dir)
        self.api = HfApi()
        # without the id check_hub_access returned, the same checks run here (before training, raising UsageError)
        self.repo_id = repo_id or check_hub_access(replace(config, push_to_hub=True))
        self.pending: list[Future] = []
        self.failed_steps: list[int] = []
        self.newest_step = -1

    @property
    def url(self) -> str:
        return f"{self.api.endpoint}/{self.repo_id}"

    def push_checkpoint(self, checkpoint_dir: str | Path, step: int) -> None:
        """Queue a push of the checkpoint's model files; returns at once, never raises."""
        if self.config.hub_strategy == "end":
            return
        try:
            staged = stage_files(model_files(checkpoint_dir), Path(checkpoint_dir).parent / STAGING_DIR / f"{step}")
        except OSError as err:
            logger.warning(f"not pushing checkpoint-{step}: cannot stage its files ({_reason(err)})")
            return
        self.newest_step = max(self.newest_step, step)
        self.pending = [f for f in self.pending if not f.done()]
        self.pending.append(self.api.run_as_future(self._push_staged, staged, step))

    def _push_staged(self, staged: Path, step: int) -> None:
        keep_each = self.config.hub_tag_checkpoints or self.config.hub_strategy == "checkpoint"
        try:
            if step < self.newest_step and not keep_each:
                logger.info(f"skipping the push of checkpoint-{step}: checkpoint-{self.newest_step} is queued")
                return
            prefixes = ("", f"checkpoint-{step}/") if self.config.hub_strategy == "checkpoint" else ("",)
            files = sorted(staged.iterdir())
            message = f"Training in progress, step {step}"
            what = f"pushing checkpoint-{step} to {self.repo_id}"
            commit = with_retries(
                lambda: commit_files(self.api, self.repo_id, files, message, self.config.hub_revision, prefixes),
                what,
                self.config,
            )
            if self.config.hub_tag_checkpoints:
                tag = lambda: self.api.create_tag(self.repo_id, tag=f"step-{step}", revision=commit.oid, exist_ok=True)  # noqa: E731
                with_retries(tag, f"tagging step-{step}", self.config)
            logger.info(f"pushed checkpoint-{step} to {self.url} (commit {commit.oid[:8]})")
        except Exception as err:  # a push must never take training down
            self.failed_steps.append(step)
            logger.warning(
                f"gave up pushing checkpoint-{step} to {self.repo_id} after {self.config.hub_retries} attempts "
                f"({_reason(err)}); training goes on and the local checkpoint is intact"
            )
        finally:
            shutil.rmtree(staged, ignore_errors=True)

    def wait(self) -> None:
        """Block until every queued checkpoint push has landed or been given up."""
        for future in self.pending:
            future.result()
        self.pending = []

    def push_final(
        self, output_dir: str | Path | None = None, card: ModelCard | None = None, step: int | None = None
    ) -> bool:
        """Wait for the checkpoint pushes, then push the final model, tokenizer, card and training_args.yaml.

        Failures are logged (with the command that pushes the folder later), not raised; returns whether it landed.
        """
        folder = Path(output_dir) if output_dir is not None else self.output_dir
        self.wait()
        message = "End of training" + (f", step {step}" if step is not None else "")
        try:
            if card is not None:
                card.save(str(folder / "README.md"))
            files = model_files(folder)
            with_retries(
                lambda: commit_files(self.api, self.repo_id, files, message, self.config.hub_revision),
                f"pushing {folder} to {self.repo_id}",
                self.config,
            )
        except Exception as err:
            logger.warning(
                f"the final push to {self.repo_id} failed ({_reason(err)}); '{folder}' is intact: push it later with "
                f"`python recipes/push_to_hub.py {folder} --hub_model_id {self.repo_id}`"
            )
            return False
        logger.info(f"pushed {folder} to {self.url}")
        return True


def stage_files(files: list[Path], staging: Path) -> Path:
    """Hard-link the files to push into `staging`, so checkpoint rotation cannot delete them mid-upload."""
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for path in files:
        try:
            os.link(path, staging / path.name)
        except OSError:  # file systems without hard links
            shutil.copy2(path, staging / path.name)
    return staging


def push_folder(folder: str | Path, config: HubConfig, commit_message: str, card: ModelCard | None = None) -> str:
    """Push a finished run or tokenizer in one commit (recipes/push_to_hub.py); returns the repo URL.

    Raises UsageError when the folder holds nothing to push or the push still fails after the retries.
    """
    folder = Path(folder)
    files = model_files(folder) if folder.is_dir() else []
    if not files and card is None:
        raise UsageError(f"'{folder}' holds no model or tokenizer files to push: pass the run's output directory")
    repo_id = check_hub_access(replace(config, push_to_hub=True))
    api = HfApi()
    if card is not None:
        card.save(str(folder / "README.md"))
        files = model_files(folder)
    try:
        with_retries(
            lambda: commit_files(api, repo_id, files, commit_message, config.hub_revision),
            f"pushing {folder} to {repo_id}",
            config,
        )
    except Exception as err:
        raise UsageError(
            f"pushing '{folder}' to '{repo_id}' failed after {config.hub_retries} attempts ({_reason(err)}): "
            "the folder is intact, run the same command again later"
        ) from None
    return f"{api.endpoint}/{repo_id}"
