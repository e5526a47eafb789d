"""Push checkpoints, the tokenizer and model cards to the Hugging Face Hub without ever stopping training.

Uploads during training run in the background through `HfApi.run_as_future` (one worker, so commits land in
order); a failed upload is retried with backoff, then logged and given up, never raised into the training loop.
The token comes from `HF_TOKEN` or the stored login and is never logged.
"""

from __future__ import annotations

import re
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from accelerate.logging import get_logger
from huggingface_hub import HfApi, ModelCard, get_token
from huggingface_hub.errors import HfHubHTTPError

from bert_recipes.errors import UsageError

logger = get_logger(__name__)

# what a model repo holds: loadable with from_pretrained, safetensors only, plus the resolved config and the card
MODEL_FILES = ["*.json", "*.safetensors", "*.txt", "*.yaml", "*.md", "*.png"]
# checkpoint folders, training state and tracker logs stay local
TOP_LEVEL_ONLY = ["*/*"]
REPO_ID = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]{0,95}/)?[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


@dataclass
class HubConfig:
    push_to_hub: bool = field(default=False, metadata={"help": "Push the result (and checkpoints) to the Hub."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Repo id, 'name' or 'namespace/name'."})
    hub_private_repo: bool = field(default=False, metadata={"help": "Create the repo as private."})
    hub_revision: str | None = field(default=None, metadata={"help": "Branch to push to (default: main)."})
    hub_strategy: str = field(
        default="every_save",
        metadata={"help": "end: push once; every_save: each checkpoint; checkpoint: also resumable."},
    )
    hub_tag_checkpoints: bool = field(default=False, metadata={"help": "Tag each pushed checkpoint step-N."})
    hub_retries: int = field(default=4, metadata={"help": "Attempts per upload before giving up."})
    hub_retry_delay: float = field(default=2.0, metadata={"help": "Seconds before the first retry; doubles each time."})


def _http_status(err: Exception) -> int | None:
    response = getattr(err, "response", None)
    return getattr(response, "status_code", None)


def check_hub_access(config: HubConfig) -> str | None:
    """Validate the repo id, the token and write access before any training; returns the full repo id."""
    if not config.push_to_hub:
        return None
    if config.hub_strategy not in ("end", "every_save", "checkpoint"):
        raise UsageError(f"--hub_strategy '{config.hub_strategy}' is not one of end, every_save, checkpoint")
    if not config.hub_model_id or not REPO_ID.match(config.hub_model_id) or ".." in config.hub_model_id:
        raise UsageError(
            f"--hub_model_id '{config.hub_model_id}' is not a repo id: use 'name' or 'namespace/name' "
            "(letters, digits, '-', '_', '.')"
        )
    if get_token() is None:
        raise UsageError("--push_to_hub needs a Hub token: set HF_TOKEN or run `hf auth login`")
    api = HfApi()
    try:
        user = api.whoami()["name"]
        repo_id = config.hub_model_id if "/" in config.hub_model_id else f"{user}/{config.hub_model_id}"
        api.create_repo(repo_id, private=config.hub_private_repo, exist_ok=True)
        if config.hub_revision:
            api.create_branch(repo_id, branch=config.hub_revision, exist_ok=True)
    except HfHubHTTPError as err:
        status = _http_status(err)
        if status == 401:
            raise UsageError("the Hub rejected the token (401): set a valid HF_TOKEN or run `hf auth login`") from None
        if status == 403:
            raise UsageError(
                f"no write access to '{config.hub_model_id}' (403): push to your own namespace or ask for access"
            ) from None
        raise UsageError(
            f"the Hub could not be reached to create '{config.hub_model_id}' ({status}): retry later"
        ) from None
    return repo_id


def upload_with_retries(
    api: HfApi, config: HubConfig, repo_id: str, folder: Path, message: str, tag: str | None = None, **kwargs
) -> bool:
    """Upload a folder's model files; retries with backoff; True when it landed (tagged if asked)."""
    delay = config.hub_retry_delay
    for attempt in range(1, config.hub_retries + 1):
        try:
            commit = api.upload_folder(
                repo_id=repo_id,
                folder_path=str(folder),
                commit_message=message,
                revision=config.hub_revision,
                **{"allow_patterns": MODEL_FILES, "ignore_patterns": TOP_LEVEL_ONLY, **kwargs},
            )
            if tag:
                api.create_tag(repo_id, tag=tag, revision=commit.oid, exist_ok=True)
            return True
        except Exception as err:  # a push must never take training down; the reason is logged, the token is not
            reason = f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
            if attempt == config.hub_retries:
                logger.warning(f"giving up on '{message}' after {attempt} attempts ({reason})")
                return False
            logger.warning(f"'{message}' failed ({reason}); retry {attempt}/{config.hub_retries - 1} in {delay:.0f}s")
            time.sleep(delay)
            delay *= 2
    return False


class CheckpointPusher:
    """Pushes checkpoints in the background during training and the final model at the end (main process only)."""

    def __init__(self, config: HubConfig, repo_id: str):
        self.config, self.repo_id = config, repo_id
        self.api = HfApi()
        self.pending: list[Future] = []

    def push_checkpoint(self, checkpoint_dir: Path, step: int) -> None:
        if self.config.hub_strategy == "end":
            return
        tag = f"step-{step}" if self.config.hub_tag_checkpoints else None
        self._submit(checkpoint_dir, f"Training in progress, step {step}", tag)
        if self.config.hub_strategy == "checkpoint":
            # the whole checkpoint, training state included, so a run can resume from the Hub
            self._submit(
                checkpoint_dir,
                f"Resumable checkpoint, step {step}",
                None,
                path_in_repo="last-checkpoint",
                allow_patterns=None,
                ignore_patterns=None,
            )

    def _submit(self, folder: Path, message: str, tag: str | None, **kwargs) -> None:
        args = (self.api, self.config, self.repo_id, folder, message, tag)
        self.pending.append(self.api.run_as_future(upload_with_retries, *args, **kwargs))

    def wait(self) -> list[bool]:
        results = [future.result() for future in self.pending]
        self.pending = []
        return results

    def push_final(self, output_dir: Path, card: ModelCard | None = None, step: int | None = None) -> bool:
        """Wait for the checkpoint pushes, then push the final model and card; failures are logged, not raised."""
        self.wait()
        if card is not None:
            card.save(str(output_dir / "README.md"))
        message = "End of training" + (f", step {step}" if step is not None else "")
        landed = upload_with_retries(self.api, self.config, self.repo_id, output_dir, message)
        if landed:
            logger.info(f"pushed to {self.api.endpoint}/{self.repo_id}")
        else:
            logger.warning(
                f"the final push failed; '{output_dir}' is intact: push it later with recipes/push_to_hub.py"
            )
        return landed


def push_folder(folder: str | Path, config: HubConfig, message: str, card: ModelCard | None = None) -> str:
    """Push a finished run in one commit (recipes/push_to_hub.py); raises UsageError if it does not land."""
    repo_id = check_hub_access(config)
    if card is not None:
        card.save(str(Path(folder) / "README.md"))
    if not upload_with_retries(HfApi(), config, repo_id, Path(folder), message):
        raise UsageError(f"pushing '{folder}' to '{repo_id}' failed after {config.hub_retries} attempts: retry later")
    return repo_id
