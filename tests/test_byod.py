"""Bring your own data: a plugin dataset through the process executor, the generic imagefolder / npz / textcsv
sources on small files made here, and each of their refusals."""

from __future__ import annotations

import importlib.util
import io
import re
import sys
import textwrap
import time
import tracemalloc
import zipfile
from importlib.metadata import EntryPoint
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from bench.cli import main
from bench.config import ConfigError, apply_overrides, validate_config
from bench.data.sources import (
    CorruptDataError,
    DataNotFoundError,
    DataTooLargeError,
    available_datasets,
    limits,
    load_dataset,
    register_dataset,
    registry,
)
from bench.data.sources import imagefolder as imagefolder_source
from bench.fed.engine import Simulation

PLUGIN = textwrap.dedent('''
    """Two classes of 12×12 grey squares: dark and bright, a plugin dataset written outside the repository."""
    import torch

    from bench.data.sources import register_dataset
    from bench.data.sources.image_dataset import make_image_dataset


    @register_dataset("squares", input_shape=(1, 12, 12), num_classes=2, size=240)
    def load_squares(num_samples: int = 240):
        """Dark and bright squares with noise."""
        g = torch.Generator().manual_seed(0)
        y = torch.arange(num_samples) % 2
        x = (y.view(-1, 1, 1, 1) * 140 + 40 + torch.randint(0, 60, (num_samples, 1, 12, 12), generator=g))
        return make_image_dataset("squares", x.to(torch.uint8), y, 2, ["dark", "bright"])
''')


@pytest.fixture(autouse=True)
def isolated_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CAFEBENCH_DATA", raising=False)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")


# ---------------------------------------------------------------- plugins


def test_a_plugin_dataset_trains_through_the_process_executor_and_is_listed(tmp_path, tiny_config_data, capsys):
    plugin = tmp_path / "squares_plugin.py"
    plugin.write_text(PLUGIN)
    data = apply_overrides(tiny_config_data, ["data.dataset=squares", "data.options={}", "train.rounds=1",
                                              "run.executor=process", "run.workers=1"])
    data["plugins"] = [str(plugin)]
    sim = Simulation(validate_config(data))
    sim.run()
    assert sim.fed.dataset.class_names == ["dark", "bright"] and len(sim.fed.dataset) == 240
    assert sim.last_eval.metrics["test/acc/exit_3"] > 0.5  # the classes differ by 140 grey levels
    assert main(["datasets", "--plugin", str(plugin)]) == 0
    listing = capsys.readouterr().out
    assert f"squares        1×12×12, 2 classes, 240 samples  [{plugin}]" in listing
    assert "imagefolder    shape, classes and size set by its options  [built in]" in listing


def test_an_entry_point_dataset_is_found_and_says_so(tmp_path, monkeypatch):
    package = tmp_path / "site"
    package.mkdir()
    (package / "ep_squares.py").write_text(PLUGIN.replace('"squares"', '"ep_squares"'))
    monkeypatch.syspath_prepend(str(package))
    point = EntryPoint("ep_squares", "ep_squares:load_squares", registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr("bench.ground.plugins.entry_points", lambda group: [point] if group == point.group else [])
    monkeypatch.setattr(registry, "_discovered", False)
    entry = available_datasets()["ep_squares"]
    assert entry.origin == "entry point ep_squares = ep_squares:load_squares"
    assert entry.size == 240 and entry.shape.input_shape == (1, 12, 12)
    sys.modules.pop("ep_squares")


def test_a_taken_or_malformed_name_is_refused():
    def load_fmnist():
        """Not Fashion-MNIST."""

    with pytest.raises(ValueError, match=r"dataset name 'fmnist' is taken by bench\.data\.sources\.fmnist\."
                                         r"load_fmnist \(built in\)"):
        register_dataset("fmnist")(load_fmnist)
    with pytest.raises(ValueError, match="dataset name must be a lower-case identifier, got 'My Data'"):
        register_dataset("My Data")
    with pytest.raises(ValueError, match="give input_shape and num_classes together"):
        register_dataset("half", input_shape=(1, 8, 8))


def test_unknown_dataset_and_missing_option_are_config_and_load_errors(tiny_config_data):
    with pytest.raises(ConfigError, match=r"data\.dataset: unknown dataset 'mydata'.*cafebench\.datasets"):
        validate_config(apply_overrides(tiny_config_data, ["data.dataset=mydata"]))
    with pytest.raises(ValueError, match=r"dataset 'npz' needs the option path \(data\.options\.path\)"):
        load_dataset("npz")


def test_the_datasets_command_refuses_an_option_without_a_name_and_a_bad_option(capsys):
    assert main(["datasets", "path=scans"]) == 2
    assert "'path=scans' is an option; give the dataset's name first" in capsys.readouterr().err
    assert main(["datasets", "synthetic", "colour=1"]) == 2
    assert "dataset 'synthetic' takes no option colour" in capsys.readouterr().err


# ---------------------------------------------------------------- imagefolder


def write_image(path: Path, value: int, size: tuple[int, int] = (8, 8), mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, (value, 255 - value, 7) if mode == "RGB" else value).save(path)


@pytest.fixture
def folder(tmp_path) -> Path:
    """cat: 2 images, dog: 3 images (one in a nested folder), 8×8 RGB PNGs, plus a stray text file."""
    root = tmp_path / "pets"
    for i in range(2):
        write_image(root / "cat" / f"{i}.png", 10 + i)
    for i in range(3):
        write_image(root / "dog" / ("nested" if i == 2 else "") / f"{i}.PNG", 200 + i)
    (root / "dog" / "notes.txt").write_text("not an image")
    return root


def test_imagefolder_reads_classes_in_folder_order_and_caches_the_tensors(folder, monkeypatch):
    data = load_dataset("imagefolder", path=str(folder))
    assert data.class_names == ["cat", "dog"] and data.y.tolist() == [0, 0, 1, 1, 1]
    assert data.x.shape == (5, 3, 8, 8) and data.x.dtype == torch.uint8
    assert data.x[0, :, 0, 0].tolist() == [10, 245, 7] and data.x[4, :, 0, 0].tolist() == [202, 53, 7]
    cache = folder / ".cafebench-native-c3.pt"
    assert cache.is_file()

    def no_decoding(*args):
        raise AssertionError("decoded although the cache matches")

    monkeypatch.setattr(imagefolder_source, "decode_images", no_decoding)
    assert torch.equal(load_dataset("imagefolder", path=str(folder)).x, data.x)
    monkeypatch.undo()
    write_image(folder / "cat" / "1.png", 99)  # same names, new content: the cache no longer matches
    assert load_dataset("imagefolder", path=str(folder)).x[1, 0, 0, 0] == 99


def test_imagefolder_resizes_to_the_declared_size_in_grey_found_under_a_data_root(folder):
    write_image(folder / "dog" / "big.png", 50, size=(16, 12))
    with pytest.raises(CorruptDataError, match=r"pets: images differ in size \(cat/0.png is 8×8, dog/big.png is "
                                               r"16×12\); declare .* data.options.size"):
        load_dataset("imagefolder", path=str(folder), cache=False)
    data = load_dataset("imagefolder", root=str(folder.parent), path="pets", size=[6, 4], channels=1)
    assert data.x.shape == (6, 1, 6, 4) and (folder / ".cafebench-6x4-c1.pt").is_file()
    assert data.x[0].unique().tolist() == [round(0.299 * 10 + 0.587 * 245 + 0.114 * 7)]


@pytest.mark.parametrize("damage, message", [
    (lambda f: [p.unlink() for p in (f / "cat").iterdir()],
     r"cat: class 'cat' holds no images"),
    (lambda f: (f / "cat" / "1.png").write_bytes(b"not a png"),
     r"cat/1.png: cannot decode image"),
])
def test_imagefolder_refusals_name_the_folder_or_file(folder, damage, message):
    damage(folder)
    with pytest.raises(CorruptDataError, match=message):
        load_dataset("imagefolder", path=str(folder), cache=False)


@pytest.mark.parametrize("options, message", [
    ({"size": 99_999}, "size must be an integer in 1..4096 or [height, width] of such integers, got 99999"),
    ({"size": [8, 0]}, "size must be an integer in 1..4096 or [height, width] of such integers, got [8, 0]"),
    ({"size": 3.5}, "size must be an integer in 1..4096 or [height, width] of such integers, got 3.5"),
    ({"size": True}, "size must be an integer in 1..4096 or [height, width] of such integers, got True"),
    ({"channels": True}, "channels must be 1 (grey) or 3 (RGB), got True"),
    ({"cache": "yes"}, "cache must be true or false, got 'yes'"),
])
def test_imagefolder_options_are_bounded(folder, options, message):
    with pytest.raises(ValueError, match=rf"^imagefolder: {re.escape(message)}$"):
        load_dataset("imagefolder", path=str(folder), **options)


def test_imagefolder_refuses_a_size_that_does_not_fit_in_memory_before_decoding(folder, monkeypatch):
    monkeypatch.setattr(limits, "available_memory", lambda: 100_000_000)
    monkeypatch.setattr(imagefolder_source, "decode_images", lambda *args: pytest.fail("decoded"))
    with pytest.raises(DataTooLargeError, match=r"^imagefolder: size=4,096 needs 251.7 MB for 5 images of 3×4096×4096 "
                                                r"\(size is the height here\), more than the 100.0 MB of memory "
                                                r"available; size may be 1..1,627 here$"):
        load_dataset("imagefolder", path=str(folder), size=4096)
    monkeypatch.undo()
    monkeypatch.setattr(limits, "available_memory", lambda: 500)  # 5 native 3×8×8 images are 960 bytes
    with pytest.raises(DataTooLargeError, match=r"pets: 5 images of 3×8×8 \(cat/0.png's size; set data.options.size "
                                                r"to resize them\) need 960 bytes, more than the 500 bytes of memory "
                                                r"available$"):
        load_dataset("imagefolder", path=str(folder), cache=False)


def test_imagefolder_refuses_loose_images_a_single_class_and_a_missing_folder(tmp_path):
    write_image(tmp_path / "loose" / "a.png", 1)
    with pytest.raises(CorruptDataError, match=r"loose: holds images but no class folders, so its images have no "
                                               "labels"):
        load_dataset("imagefolder", path=str(tmp_path / "loose"))
    write_image(tmp_path / "one" / "only" / "a.png", 1)
    with pytest.raises(CorruptDataError, match=r"one: only one class folder \(only\)"):
        load_dataset("imagefolder", path=str(tmp_path / "one"))
    with pytest.raises(DataNotFoundError, match=r"not found: looked for the folder 'elsewhere'(.|\n)*cwd/elsewhere"):
        load_dataset("imagefolder", path="elsewhere")


# ---------------------------------------------------------------- npz


def test_npz_reads_every_image_layout_and_named_labels(tmp_path):
    y = np.array([0, 1, 2, 1, 0, 2])
    grey = np.arange(6 * 5 * 4, dtype=np.uint8).reshape(6, 5, 4)
    np.savez(tmp_path / "grey.npz", x=grey, y=y)
    data = load_dataset("npz", path=str(tmp_path / "grey.npz"))
    assert data.x.shape == (6, 1, 5, 4) and data.num_classes == 3 and data.class_names == ["0", "1", "2"]
    assert torch.equal(data.x[:, 0], torch.from_numpy(grey))
    nhwc = np.random.default_rng(0).integers(0, 256, (6, 5, 6, 3), dtype=np.uint8)
    np.savez(tmp_path / "nhwc.npz", x=nhwc, y=np.array(["cat", "dog", "ant", "dog", "cat", "ant"]))
    data = load_dataset("npz", path=str(tmp_path / "nhwc.npz"))
    assert data.x.shape == (6, 3, 5, 6) and torch.equal(data.x[2, :, 4, 1], torch.from_numpy(nhwc[2, 4, 1]))
    assert data.class_names == ["ant", "cat", "dog"] and data.y.tolist() == [1, 2, 0, 2, 1, 0]
    np.savez(tmp_path / "nchw.npz", x=nhwc.transpose(0, 3, 1, 2), y=y)
    assert torch.equal(load_dataset("npz", path=str(tmp_path / "nchw.npz")).x, data.x)
    np.savez(tmp_path / "square.npz", x=np.zeros((6, 3, 5, 3), np.uint8), y=y)  # 3 could be either axis
    with pytest.raises(CorruptDataError, match=r"square.npz: cannot tell from x's shape \(6, 3, 5, 3\).*layout"):
        load_dataset("npz", path=str(tmp_path / "square.npz"))
    assert load_dataset("npz", path=str(tmp_path / "square.npz"), layout="nchw").x.shape == (6, 3, 5, 3)


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.zeros((4, 5, 5), np.uint8)}, r"no array 'y' \(the labels\); arrays in it: x"),
    ({"x": np.zeros((4, 5, 5)), "y": [0, 1, 0, 1]}, r"x is float64; expected uint8 images"),
    ({"x": np.zeros((4, 5, 5), np.uint8), "y": [0, 1, 0]}, r"x holds 4 images but y holds 3 labels"),
    ({"x": np.zeros((4, 5, 5), np.uint8), "y": [0.0, 1.5, 0.0, 1.0]},
     r"sample 1: label 1.5 is neither an integer nor a name"),
    ({"x": np.zeros((4, 5, 5), np.uint8), "y": [0, 2, 0, 2]}, r"labels run 0..2 but class 1 has no sample"),
    ({"x": np.zeros((4, 5, 5), np.uint8), "y": [3, 3, 3, 3]}, r"labels run 3..3 but class 0 has no sample"),
    ({"x": np.zeros((4, 5, 5), np.uint8), "y": [0, 1, 3 * 10**12, 0]},  # np.bincount would ask for 24 TB
     r"labels run 0..3000000000000 but class 2 has no sample; .*\(so labels lie in 0..3 for 4 samples\)"),
    ({"x": np.zeros((4, 5, 5), np.uint8), "y": [0.0, 1.0, 1e300, 1.0]}, r"labels run 0..1e\+300 but class 2"),
    ({"x": np.zeros((4, 5, 5), np.uint8), "y": np.array([0, 1, 2**64 - 1, 1], np.uint64)},
     r"labels run 0..18446744073709551615 but class 2"),
    ({"x": np.zeros((4, 5, 5), np.uint8), "y": ["a", "a", "a", "a"]}, r"all samples have the one label 'a'"),
    ({"x": np.zeros((4, 5), np.uint8), "y": [0, 1, 0, 1]}, r"x has shape \(4, 5\); expected N×H×W"),
])
def test_npz_refusals_name_the_file_and_the_problem(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(CorruptDataError, match=r"bad\.npz: " + message):
        load_dataset("npz", path=str(tmp_path / "bad.npz"))


def test_npz_whose_headers_declare_more_than_memory_holds_is_refused_before_loading(tmp_path, capsys):
    # x.npy declares 3·10^12 bytes but holds none: NumPy would allocate them before finding the data missing.
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False,
                                                  "shape": (1_000_000, 3, 1000, 1000)})
    labels = io.BytesIO()
    np.save(labels, np.arange(4))
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as archive:
        archive.writestr("x.npy", header.getvalue())
        archive.writestr("y.npy", labels.getvalue())
    started = time.perf_counter()
    assert main(["datasets", "npz", f"path={tmp_path / 'huge.npz'}"]) == 2
    assert time.perf_counter() - started < 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and re.fullmatch(
        rf"cafebench datasets: error: {tmp_path}/huge.npz: x \(1000000, 3, 1000, 1000\) uint8 and y \(4,\) int64 "
        r"need 3.0 TB, more than the [\d.]+ [MGT]B of memory available", err[0])


def test_npz_refuses_a_file_that_is_not_an_archive(tmp_path):
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CorruptDataError, match=r"broken\.npz: not a readable \.npz archive"):
        load_dataset("npz", path=str(tmp_path / "broken.npz"))


# ---------------------------------------------------------------- textcsv

TEXTS = pd.DataFrame({"body": ["Stocks rose today", "The match ended", "Stocks fell, stocks rose", "A late goal"],
                      "topic": ["business", "sport", "business", "sport"]})


def test_textcsv_tokenises_csv_and_parquet_alike(tmp_path, capsys):
    TEXTS.to_csv(tmp_path / "news.csv", index=False)
    data = load_dataset("textcsv", path=str(tmp_path / "news.csv"), text_column="body", label_column="topic",
                        vocab_size=5, seq_len=4)
    assert data.kind == "text" and data.class_names == ["business", "sport"] and data.y.tolist() == [0, 1, 0, 1]
    # vocabulary: ids 0 (padding) and 1 (unknown), then "stocks" (3 times), "rose" (2), "a" (first of the ties)
    assert data.vocab_size == 5
    assert data.x.tolist() == [[2, 3, 1, 0], [1, 1, 1, 0], [2, 1, 2, 3], [4, 1, 1, 0]]
    if importlib.util.find_spec("pyarrow") is not None:
        TEXTS.to_parquet(tmp_path / "news.parquet")
        again = load_dataset("textcsv", path=str(tmp_path / "news.parquet"), text_column="body",
                             label_column="topic", vocab_size=5, seq_len=4)
        assert torch.equal(again.x, data.x) and torch.equal(again.y, data.y)
    assert main(["datasets", "textcsv", f"path={tmp_path / 'news.csv'}", "text_column=body",
                 "label_column=topic", "seq_len=4"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "textcsv: 4 samples, input 4 token ids (vocabulary 12), 2 classes: business, sport",
        "  samples per class: 2 to 2"]


def test_parquet_without_pyarrow_names_the_missing_package(tmp_path, monkeypatch):
    (tmp_path / "news.parquet").write_bytes(b"PAR1")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pyarrow" else real(name, *a))
    with pytest.raises(RuntimeError, match=r"news\.parquet: reading Parquet needs the package pyarrow"):
        load_dataset("textcsv", path=str(tmp_path / "news.parquet"))


@pytest.mark.parametrize("rows, options, message", [
    ("text,label\nhello,1\nworld,0\n", {"label_column": "topic"},
     r"no column 'topic' \(columns: text, label\); set data.options.label_column"),
    ("text,label\nhello,1\nworld,\nagain,0\n", {}, r"news\.csv:3: no label"),
    ("text,label\nhello,0.5\nworld,1\n", {}, r"news\.csv:2: label 0.5 is neither an integer nor a name"),
    ("text,label\nhello,1\nworld,2\n", {}, r"labels run 1..2 but class 0 has no sample"),
    ("text,label\n", {}, r"news\.csv: holds no samples"),
    ("text,label\n,0\n\"  \",1\n!?,0\n", {}, r"news\.csv: the column 'text' holds no words \(all 3 texts are empty or "
                                          r"without letters and digits\); set data.options.text_column to the texts$"),
    ("text,label\nhello,3000000000000\nworld,0\n", {}, r"labels run 0..3000000000000 but class 1 has no sample"),
    ("text,label\nhello,1\nworld,0\n", {"text_column": ["text"]}, r"^textcsv: text_column must be a column name"),
])
def test_textcsv_refusals_name_the_file_and_the_problem(tmp_path, rows, options, message):
    (tmp_path / "news.csv").write_text(rows)
    with pytest.raises(ValueError, match=message):
        load_dataset("textcsv", path=str(tmp_path / "news.csv"), **options)


@pytest.mark.parametrize("option, message", [
    ("seq_len=1000000000", "textcsv: seq_len must be an integer in 1..65,536, got 1000000000"),  # grew to 22 GB
    ("seq_len=0", "textcsv: seq_len must be an integer in 1..65,536, got 0"),
    ("vocab_size=1e12", "textcsv: vocab_size must be an integer in 3..16,777,216, got '1e12'"),
    ("vocab_size=2", "textcsv: vocab_size must be an integer in 3..16,777,216, got 2"),
])
def test_textcsv_size_options_are_refused_in_one_line_before_allocating(tmp_path, capsys, option, message):
    TEXTS.to_csv(tmp_path / "news.csv", index=False)
    started = time.perf_counter()
    assert main(["datasets", "textcsv", f"path={tmp_path / 'news.csv'}", "text_column=body", "label_column=topic",
                 option]) == 2
    assert time.perf_counter() - started < 1
    assert capsys.readouterr().err == f"cafebench datasets: error: {message}\n"


def test_textcsv_refuses_a_seq_len_whose_token_ids_do_not_fit_in_memory(tmp_path, monkeypatch, capsys):
    pd.DataFrame({"text": ["some words"] * 64, "label": [0, 1] * 32}).to_csv(tmp_path / "news.csv", index=False)
    monkeypatch.setattr(limits, "available_memory", lambda: 16_000_000)  # 64 texts × 65,536 tokens are 33.6 MB
    tracemalloc.start()
    try:
        assert main(["datasets", "textcsv", f"path={tmp_path / 'news.csv'}", "seq_len=65536"]) == 2
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8_000_000  # the token-id array was never allocated
    assert capsys.readouterr().err == (
        "cafebench datasets: error: textcsv: seq_len=65,536 needs 33.6 MB for the token ids of 64 texts (8 bytes a "
        "token), more than the 16.0 MB of memory available; seq_len may be 1..31,250 here\n")
    monkeypatch.undo()
    assert load_dataset("textcsv", path=str(tmp_path / "news.csv"), seq_len=65536).x.shape == (64, 65536)


def test_a_path_that_is_not_a_path_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"^npz: path must be a file or folder path, got \['a.npz'\]$"):
        load_dataset("npz", path=["a.npz"])


def test_textcsv_refuses_other_file_types(tmp_path):
    (tmp_path / "news.tsv").write_text("text\tlabel\n")
    with pytest.raises(CorruptDataError, match=r"news\.tsv: expected a \.csv or \.parquet file"):
        load_dataset("textcsv", path=str(tmp_path / "news.tsv"))
