"""``textcsv``: a CSV or Parquet table with a text column and a label column, as fixed-length token ids.

Tokenised as AG News is (:mod:`bench.data.sources.agnews`): lowercase words, the ``vocab_size - 2`` most frequent
tokens of the whole table after the padding and unknown ids. Parquet needs the ``pyarrow`` package.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import pandas as pd
import torch

from bench.data.dataset import Dataset
from bench.data.sources.agnews import NUM_SPECIAL_IDS, build_vocabulary, encode_all, require_text_options, tokenize
from bench.data.sources.errors import CorruptDataError
from bench.data.sources.registry import register_dataset
from bench.data.sources.user_files import class_ids, find_user_path

log = logging.getLogger(__name__)
CSV_FIRST_LINE = 2  # the header is line 1


def read_table(file: Path) -> pd.DataFrame:
    """The table of a ``.csv`` or ``.parquet`` file."""
    suffix = file.suffix.lower()
    if suffix == ".parquet":
        if importlib.util.find_spec("pyarrow") is None:
            raise RuntimeError(f"{file}: reading Parquet needs the package pyarrow, which is not installed "
                               "(pip install pyarrow), or save the table as CSV")
        reader = pd.read_parquet
    elif suffix == ".csv":
        reader = pd.read_csv
    else:
        raise CorruptDataError(f"{file}: expected a .csv or .parquet file")
    try:
        return reader(file)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, ValueError) as err:
        raise CorruptDataError(f"{file}: cannot read it as {suffix[1:]} ({err})") from err


@register_dataset("textcsv")
def load_textcsv(path: str, root: str | os.PathLike | None = None, text_column: str = "text",
                 label_column: str = "label", vocab_size: int = 20000, seq_len: int = 64) -> Dataset:
    """Your texts: a CSV or Parquet table with a text and a label column (see the options).

    Options: path, text_column, label_column, vocab_size, seq_len."""
    require_text_options("textcsv", vocab_size, seq_len)
    file = find_user_path("textcsv", path, root, folder=False)
    table = read_table(file)
    for column, option in ((text_column, "text_column"), (label_column, "label_column")):
        if isinstance(column, bool) or not isinstance(column, str | int):
            raise ValueError(f"textcsv: {option} must be a column name, got {column!r}")
        if column not in table.columns:
            raise CorruptDataError(f"{file}: no column {column!r} (columns: {', '.join(map(str, table.columns))}); "
                                   f"set data.options.{option}")
    first_line = CSV_FIRST_LINE if file.suffix.lower() == ".csv" else None
    ids, names = class_ids(table[label_column].to_numpy(), file, first_line)
    documents = [[] if pd.isna(text) else tokenize(str(text)) for text in table[text_column]]
    if not any(documents):
        raise CorruptDataError(f"{file}: the column {text_column!r} holds no words (all {len(documents):,} texts are "
                               "empty or without letters and digits); set data.options.text_column to the texts")
    vocabulary = build_vocabulary(documents, vocab_size)
    x = encode_all(documents, vocabulary, seq_len, "textcsv")
    log.info("loaded %d texts of %d classes from %s, %d-token vocabulary", len(ids), len(names), file, len(vocabulary))
    return Dataset(name="textcsv", x=x, y=torch.from_numpy(ids), num_classes=len(names), kind="text",
                   vocab_size=NUM_SPECIAL_IDS + len(vocabulary), class_names=names)
