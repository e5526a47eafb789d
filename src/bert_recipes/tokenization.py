"""Train a BERT WordPiece tokenizer with `tokenizers`, save it for `AutoTokenizer`, and load it back checked."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from accelerate.logging import get_logger
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from tqdm.auto import tqdm
from transformers import AutoTokenizer, BertTokenizerFast, PreTrainedTokenizerFast

from bert_recipes.errors import UsageError

logger = get_logger(__name__)

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@dataclass
class TokenizerConfig:
    vocab_size: int = field(default=30522, metadata={"help": "Vocabulary size, special tokens included."})
    min_frequency: int = field(default=2, metadata={"help": "Minimum count for a merge to enter the vocabulary."})
    lowercase: bool = field(default=True, metadata={"help": "Lowercase and strip accents (BERT uncased)."})
    model_max_length: int = field(default=512, metadata={"help": "Longest sequence the model will accept."})
    limit_alphabet: int = field(default=1000, metadata={"help": "Most distinct characters kept in the alphabet."})


def wordpiece_model(vocab: dict[str, int] | None = None) -> models.WordPiece:
    return models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100, continuing_subword_prefix="##")


def build_wordpiece_tokenizer(lowercase: bool) -> Tokenizer:
    """An untrained BERT tokenizer: BERT normalizer, pre-tokenizer, decoder (the post-processor needs ids)."""
    tokenizer = Tokenizer(wordpiece_model())
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=lowercase, lowercase=lowercase
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    return tokenizer


def _number_pieces_in_a_fixed_order(tokenizer: Tokenizer) -> None:
    # the trainer numbers pieces in hash-map order, so the same corpus gave different ids on every run; WordPiece
    # splits words by the set of pieces alone, so renumbering them (special tokens first, then sorted) is lossless
    pieces = sorted(set(tokenizer.get_vocab()) - set(SPECIAL_TOKENS))
    tokenizer.model = wordpiece_model({piece: i for i, piece in enumerate(SPECIAL_TOKENS + pieces)})


def _add_post_processor(tokenizer: Tokenizer) -> None:
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )


def _with_progress(batches: Iterable[list[str]]) -> Iterator[list[str]]:
    seen = 0
    for batch in tqdm(batches, desc="training tokenizer", unit=" batches"):
        seen += len(batch)
        yield batch
    if seen == 0:
        raise UsageError("the corpus is empty: it holds no text to train the tokenizer on")


def train_tokenizer(batches: Iterable[list[str]], config: TokenizerConfig) -> BertTokenizerFast:
    """Train WordPiece on an iterator of text batches (memory bounded by the vocabulary, not the corpus)."""
    minimum = len(SPECIAL_TOKENS) + 1
    if config.vocab_size < minimum:
        raise UsageError(f"--vocab_size {config.vocab_size} is too small: it must hold the 5 special tokens and more")
    tokenizer = build_wordpiece_tokenizer(config.lowercase)
    trainer = trainers.WordPieceTrainer(
        vocab_size=config.vocab_size,
        min_frequency=config.min_frequency,
        special_tokens=SPECIAL_TOKENS,
        limit_alphabet=config.limit_alphabet,
        continuing_subword_prefix="##",
        show_progress=False,
    )
    tokenizer.train_from_iterator(_with_progress(batches), trainer=trainer)
    _check_vocab_size(tokenizer, config)
    _number_pieces_in_a_fixed_order(tokenizer)
    _add_post_processor(tokenizer)
    return wrap_fast_tokenizer(tokenizer, config)


def _check_vocab_size(tokenizer: Tokenizer, config: TokenizerConfig) -> None:
    size = tokenizer.get_vocab_size()
    if size <= len(SPECIAL_TOKENS):
        raise UsageError("the corpus gave no vocabulary beyond the special tokens: train on more text")
    if size < config.vocab_size:
        logger.warning(
            f"vocabulary has {size} entries, fewer than --vocab_size {config.vocab_size}: the corpus has too few "
            f"distinct words and pieces seen at least --min_frequency {config.min_frequency} times"
        )


def wrap_fast_tokenizer(tokenizer: Tokenizer, config: TokenizerConfig) -> BertTokenizerFast:
    # tokenizer_object keeps the trained vocabulary; vocab_file= would silently build a 5-token one
    return BertTokenizerFast(
        tokenizer_object=tokenizer,
        do_lower_case=config.lowercase,
        strip_accents=None,
        tokenize_chinese_chars=True,
        model_max_length=config.model_max_length,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
    )


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, output_dir: str | Path) -> None:
    """Save tokenizer.json and its config, plus vocab.txt so the slow (Python) BERT tokenizer loads it too."""
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(output))
    # transformers 5 saves no vocab.txt for the fast class; the slow class and other toolkits need one
    by_id = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    (output / "vocab.txt").write_text("".join(f"{token}\n" for token, _ in by_id), encoding="utf-8")


def load_tokenizer(name_or_path: str | None, require_mask: bool = True) -> PreTrainedTokenizerFast:
    """Load a fast tokenizer from a directory or Hub id, with a clear error when it is missing or broken."""
    if not name_or_path:
        raise UsageError(
            "no tokenizer given: pass --tokenizer_name_or_path DIR_OR_HUB_ID "
            "(train one with tokenizer/train_tokenizer.py)"
        )
    local = Path(name_or_path)
    if local.exists() and not (local / "tokenizer.json").is_file() and not (local / "vocab.txt").is_file():
        raise UsageError(
            f"tokenizer dir '{name_or_path}' has no tokenizer.json or vocab.txt: train one with "
            "tokenizer/train_tokenizer.py"
        )
    if not local.exists() and name_or_path.count("/") != 1:
        raise UsageError(f"tokenizer '{name_or_path}' is neither a directory nor a Hub id: check the path")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except Exception as err:
        raise UsageError(
            f"tokenizer '{name_or_path}' could not be loaded ({type(err).__name__}: {str(err)[:200]}): "
            "re-create it with tokenizer/train_tokenizer.py"
        ) from None
    if not tokenizer.is_fast:
        raise UsageError(f"tokenizer '{name_or_path}' has no fast version: save it with tokenizer.json")
    if require_mask and tokenizer.mask_token_id is None:
        raise UsageError(f"tokenizer '{name_or_path}' has no [MASK] token: masked-LM pretraining needs one")
    return tokenizer
