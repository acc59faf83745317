"""Tokens: words or lines of text -> padded character ids with a vocabulary fitted on train.

Sequences are independent examples, so they split at random. The vocabulary is fitted on
the training split alone: a character seen only in validation or test becomes UNK, as it
would in new text.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from seqmodels.data.config import DataConfig
from seqmodels.data.modality import Modality, PreparedData
from seqmodels.data.splits import split_examples
from seqmodels.errors import DataError
from seqmodels.spec import (
    EOS,
    HELDOUT_FILE,
    ID_COLUMNS,
    PAD,
    SPECIAL_TOKENS,
    SPLITS,
    UNK,
    VOCAB_FILE,
    DataSpec,
)
from seqmodels.storage import open_input

KIND = "tokens"
ID_COLUMN = ID_COLUMNS[KIND]


def _english_words() -> list[str]:
    """The `english-words` package's web2 list (234k words, MIT): lower-case, letters only."""
    from english_words import get_english_words_set

    return sorted(get_english_words_set(["web2"], lower=True, alpha=True))


SOURCES: dict[str, Callable[[], list[str]]] = {"english-words": _english_words}


def load_sequences(cfg: DataConfig) -> list[str]:
    """Bundled text, or a UTF-8 text file (a local path or a URI) with one sequence per line."""
    if cfg.source in SOURCES:
        return SOURCES[cfg.source]()
    location = cfg.source  # kept as text: pathlib.Path mangles s3://
    try:
        with open_input(location) as handle:
            content = handle.read()
    except DataError as error:
        missing = error.what == f"{location} does not exist"
        raise DataError(f"text file {error.what}" if missing else error.what,
                        where="params.yaml: data.source",
                        fix=f"{error.fix}; or point data.source at a text file or one of {sorted(SOURCES)}",
                        ) from None
    try:
        return [line.strip() for line in content.decode("utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError as error:
        raise DataError(f"{location} is not UTF-8 text ({error.reason} at byte {error.start})",
                        where=location, fix="re-save the file as UTF-8") from None


class TokenTable(pa.DataFrameModel):
    """Prepared token sequences: `x` holds max_length + 1 ids (characters, EOS, PAD...)."""

    seq_id: Series[np.int64] = pa.Field(unique=True, ge=0)
    split: Series[str] = pa.Field(isin=list(SPLITS))
    x: Series[object]

    class Config:
        strict = True


def encode_texts(texts: list[str], vocab: dict[str, int], width: int) -> np.ndarray:
    """Texts of at most width - 1 characters -> (n, width) ids: the characters (UNK when not
    in `vocab`), EOS, then PAD. Prepare and the scoring of new text share it."""
    ids = np.full((len(texts), width), PAD, dtype=np.int32)
    for row, text in enumerate(texts):
        ids[row, :len(text)] = [vocab.get(ch, UNK) for ch in text]
        ids[row, len(text)] = EOS
    return ids


def prepare_tokens(sequences: list[str], cfg: DataConfig,
                   seed: int) -> tuple[pd.DataFrame, dict, DataSpec]:
    """Character sequences -> padded token ids with EOS, vocabulary fitted on train only.

    Each row's `x` holds max_length + 1 ids: the characters, EOS, then PAD. Characters
    never seen in training map to UNK.
    """
    kept = [s for s in sequences if 0 < len(s) <= cfg.max_length]
    if not kept:
        raise DataError(f"no sequence of 1..{cfg.max_length} characters in {cfg.source}",
                        where="params.yaml: data.max_length", fix="raise data.max_length")
    rng = np.random.default_rng(seed)
    if cfg.max_examples is not None and len(kept) > cfg.max_examples:
        kept = [kept[i] for i in np.sort(rng.choice(len(kept), cfg.max_examples, replace=False))]
    splits = split_examples(len(kept), cfg.split, seed)
    alphabet = sorted({ch for s, split in zip(kept, splits, strict=True) if split == "train" for ch in s})
    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *alphabet])}
    width = cfg.max_length + 1
    frame = pd.DataFrame({ID_COLUMN: np.arange(len(kept), dtype=np.int64), "split": splits})
    frame["x"] = list(encode_texts(kept, vocab, width))
    spec = DataSpec(kind=KIND, input_shape=(width,), vocab_size=len(vocab))
    return frame, {"tokens": list(vocab)}, spec


def prepare(cfg: DataConfig, seed: int) -> PreparedData:
    """Read the sequences and encode them; the vocabulary is kept beside them (it decodes ids)."""
    examples, vocab, spec = prepare_tokens(load_sequences(cfg), cfg, seed)
    inverse = dict(enumerate(vocab["tokens"]))
    test = examples.loc[examples["split"].eq("test"), "x"]
    texts = ["".join(inverse[int(i)] for i in ids[:int(np.argmax(ids == EOS))]) for ids in test]
    return PreparedData(examples, spec, f"{len(examples)} sequences, vocabulary {spec.vocab_size}",
                        {VOCAB_FILE: vocab, HELDOUT_FILE: pd.DataFrame({"text": texts})})


MODALITY = Modality(kind=KIND, sources=tuple(SOURCES), prepare=prepare, table=TokenTable)
