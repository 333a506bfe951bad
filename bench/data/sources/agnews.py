"""AG News topic classification from the standard ``train.csv`` / ``test.csv``, as fixed-length token ids."""

from __future__ import annotations

import csv
import html
import logging
import os
import re
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from bench.data.dataset import Dataset
from bench.data.sources.errors import CorruptDataError, require_labels_in_range
from bench.data.sources.limits import MAX_SEQ_LEN, MAX_VOCAB_SIZE, require_fits, require_int
from bench.data.sources.roots import candidate_dirs, locate

log = logging.getLogger(__name__)

PAD_ID = 0
UNKNOWN_ID = 1
NUM_SPECIAL_IDS = 2
SUBDIRS = ["ag_news_csv", "agnews", "AG_NEWS", ""]  # AG_NEWS: torchtext's folder; "": the root itself
CLASS_NAMES = ["World", "Sports", "Business", "Sci/Tech"]
HOW_TO_GET = (
    "download train.csv and test.csv of ag_news_csv (e.g. from "
    "https://github.com/mhjabreel/CharCnn_Keras/tree/master/data/ag_news_csv) into <data root>/ag_news_csv/."
)
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
# An HTML entity whose "&" the distributed text turned into a space ("Intel #39;s" for "Intel&#39;s"), and an
# HTML tag once unescaped.
_BARE_ENTITY = re.compile(r"(?:^| )(#\d+|quot|amp|lt|gt|nbsp);")
_TAG = re.compile(r"<[^<>]*>")
HEADER_FIRST_COLUMNS = ("class index", "class", "label")  # the header row of the common CSV variant


def clean_text(text: str) -> str:
    """The text as it was published: HTML entities decoded (also those whose ``&`` became a space), tags removed.

    AG News keeps the crawled HTML escapes (``Intel #39;s``, ``&lt;b&gt;``); left alone they become frequent
    tokens ("39", "lt", "gt") that take vocabulary slots and sequence positions from words.
    """
    return _TAG.sub(" ", html.unescape(_BARE_ENTITY.sub(r"&\1;", text)))


def tokenize(text: str) -> list[str]:
    """Lowercase words and numbers (an apostrophe suffix such as ``'s`` stays attached)."""
    return _WORD.findall(text.lower())


def build_vocabulary(documents: list[list[str]], vocab_size: int) -> dict[str, int]:
    """Map the ``vocab_size - 2`` most frequent tokens to ids 2.. (ties broken alphabetically).

    Ids 0 and 1 are reserved for padding and unknown tokens.
    """
    counts = Counter(token for document in documents for token in document)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[: vocab_size - NUM_SPECIAL_IDS]
    return {token: NUM_SPECIAL_IDS + rank for rank, (token, _) in enumerate(ranked)}


def require_text_options(dataset: str, vocab_size: object, seq_len: object) -> None:
    """Refuse a ``vocab_size`` outside ``3..MAX_VOCAB_SIZE`` or a ``seq_len`` outside ``1..MAX_SEQ_LEN``."""
    require_int(dataset, "vocab_size", vocab_size, NUM_SPECIAL_IDS + 1, MAX_VOCAB_SIZE)
    require_int(dataset, "seq_len", seq_len, 1, MAX_SEQ_LEN)


def encode_all(documents: list[list[str]], vocabulary: dict[str, int], seq_len: int, dataset: str) -> torch.Tensor:
    """int64 token ids ``N×seq_len``: each document's first ``seq_len`` tokens (:data:`UNKNOWN_ID` for a token
    outside ``vocabulary``), right-padded with :data:`PAD_ID`, in one array whose size is checked against the memory
    available before it is allocated.

    Raises:
        DataTooLargeError: ``seq_len`` tokens of every document would not fit (the message gives the range that does).
    """
    itemsize = np.dtype(np.int64).itemsize
    require_fits(dataset, "seq_len", seq_len, 1, len(documents) * itemsize,
                 f"the token ids of {len(documents):,} texts ({itemsize} bytes a token)")
    x = np.full((len(documents), seq_len), PAD_ID, dtype=np.int64)
    for row, document in zip(x, documents, strict=True):
        ids = [vocabulary.get(token, UNKNOWN_ID) for token in document[:seq_len]]
        row[: len(ids)] = ids
    return torch.from_numpy(x)


def _read_csv(path: Path) -> tuple[list[list[str]], np.ndarray]:
    """Tokenised, cleaned ``title description`` documents and 0-based labels of one AG News CSV file.

    A UTF-8 byte-order mark and a header row (``Class Index,Title,Description``) are skipped."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as stream:
            rows = list(csv.reader(stream))
    except (UnicodeDecodeError, csv.Error) as err:
        raise CorruptDataError(f"{path}: not a UTF-8 CSV file ({err})") from err
    first = 2 if rows and rows[0] and rows[0][0].strip().lower() in HEADER_FIRST_COLUMNS else 1
    documents, labels = [], []
    for number, row in enumerate(rows[first - 1:], start=first):
        if len(row) != 3 or not row[0].strip().isdigit():
            raise CorruptDataError(
                f"{path}:{number}: expected 3 columns (class index 1..4, title, description), "
                f"found {row[:3]}"
            )
        labels.append(int(row[0]) - 1)
        documents.append(tokenize(clean_text(f"{row[1]} {row[2]}")))
    labels_array = np.asarray(labels, dtype=np.int64)
    require_labels_in_range(labels_array, len(CLASS_NAMES), path)
    return documents, labels_array


def load_agnews(root: str | os.PathLike | None = None, vocab_size: int = 20000, seq_len: int = 64) -> Dataset:
    """AG News, train and test pooled (127,600 articles, 4 classes), as int64 token ids ``N×seq_len``.

    The vocabulary comes from the training part only: the ``vocab_size - 2`` most frequent tokens,
    after the special ids 0 (padding) and 1 (unknown).
    """
    require_text_options("agnews", vocab_size, seq_len)
    directory = locate(
        "agnews",
        candidate_dirs(root, SUBDIRS),
        lambda d: (d / "train.csv").is_file() and (d / "test.csv").is_file(),
        expected="train.csv and test.csv",
        how_to_get=HOW_TO_GET,
    )
    train_documents, train_labels = _read_csv(directory / "train.csv")
    test_documents, test_labels = _read_csv(directory / "test.csv")
    vocabulary = build_vocabulary(train_documents, vocab_size)
    x = encode_all(train_documents + test_documents, vocabulary, seq_len, "agnews")
    y = torch.from_numpy(np.concatenate([train_labels, test_labels]))
    log.info("loaded AG News from %s: %d articles, %d-token vocabulary", directory, len(y), len(vocabulary))
    return Dataset(
        name="agnews",
        x=x,
        y=y,
        num_classes=len(CLASS_NAMES),
        kind="text",
        vocab_size=NUM_SPECIAL_IDS + len(vocabulary),
        class_names=list(CLASS_NAMES),
    )
