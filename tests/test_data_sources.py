"""Dataset sources: real Fashion-MNIST, small generated files in each standard format, and failures."""

from __future__ import annotations

import csv
import gzip
import os
import pickle
import re
import struct
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.data.sources import (
    CorruptDataError,
    DataNotFoundError,
    DataTooLargeError,
    available_datasets,
    data_roots,
    limits,
    load_dataset,
)
from bench.data.sources import fmnist as fmnist_source
from bench.data.sources.cifar import CIFAR10, CIFAR100, CifarLayout
from bench.data.sources.safe_pickle import load_numpy_pickle

DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")
PickleWriter = Callable[[Path, object], None]


@pytest.fixture(autouse=True)
def isolated_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No data root from the environment or the real working directory, and never a download."""
    monkeypatch.delenv("CAFEBENCH_DATA", raising=False)
    monkeypatch.setenv("CAFEBENCH_NO_DOWNLOAD", "1")
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)


# ---------------------------------------------------------------- registry and roots


def test_registry_names_and_unknown_name() -> None:
    assert {
        "fmnist", "mnist5k", "digits", "cifar10", "cifar100", "tinyimagenet", "agnews", "synthetic",
        "imagefolder", "npz", "textcsv",
    } <= set(available_datasets())  # fmt: skip
    with pytest.raises(ValueError, match="unknown dataset 'mnist'.*agnews, cifar10, cifar100, digits"):
        load_dataset("mnist")


def test_a_misspelt_dataset_name_names_the_closest_one() -> None:
    with pytest.raises(ValueError, match=r"^unknown dataset 'fmnst' \(did you mean fmnist\?\); available: agnews, "):
        load_dataset("fmnst")


def test_the_listing_says_where_file_data_was_found_or_looked_for_and_how_to_get_it(tmp_path: Path) -> None:
    from bench.cli.datasets import describe_entry

    cifar10 = available_datasets()["cifar10"]
    lines = describe_entry(cifar10).splitlines()
    assert lines[0] == "cifar10        3×32×32, 10 classes, 60,000 samples once present  [built in]"
    datasets = Path.cwd() / "datasets"
    assert lines[2] == (f"{'':14s} not found: looked in {datasets / 'cifar-10-batches-py'}, {datasets}; to get it: "
                        "download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and "
                        "extract it into a data root (giving <data root>/cifar-10-batches-py/), or allow a download "
                        "(option download=True, $CAFEBENCH_NO_DOWNLOAD unset, network access).")
    folder = tmp_path / "root" / CIFAR10.folder
    folder.mkdir(parents=True)
    for name in (*CIFAR10.batch_files, CIFAR10.meta_file):
        (folder / name).touch()  # the listing only looks for the files; it loads nothing
    lines = describe_entry(cifar10, tmp_path / "root").splitlines()
    assert lines[0] == "cifar10        3×32×32, 10 classes, 60,000 samples  [built in]"
    assert lines[2] == f"{'':14s} found in {folder}"
    assert len(describe_entry(available_datasets()["digits"]).splitlines()) == 2  # bundled: nothing to find


def test_unknown_option_is_rejected_with_the_accepted_ones() -> None:
    with pytest.raises(
        ValueError, match="no option colour.*channels, image_size, num_classes, num_samples, seed"
    ):
        load_dataset("synthetic", colour=True)


def test_data_roots_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAFEBENCH_DATA", str(tmp_path / "env"))
    cwd_datasets = Path.cwd() / "datasets"
    assert data_roots(tmp_path / "explicit") == [tmp_path / "explicit", tmp_path / "env", cwd_datasets]
    assert data_roots() == [tmp_path / "env", cwd_datasets]
    assert data_roots(cwd_datasets) == [cwd_datasets, tmp_path / "env"]  # no duplicates


# ---------------------------------------------------------------- Fashion-MNIST (IDX)


def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray, compress: bool) -> Path:
    data = idx_bytes(array)
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def write_fmnist(directory: Path, compress: bool, train: int = 10, test: int = 10) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    parts = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (train, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(train) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (test, 28, 28)),
        "t10k-labels-idx1-ubyte": (np.arange(test) + 7) % 10,
    }
    directory.mkdir(parents=True, exist_ok=True)
    for stem, array in parts.items():
        write_idx(directory / stem, array, compress)
    return parts


@pytest.mark.skipif(not DEBIAN_FMNIST.is_dir(), reason="needs `apt-get install dataset-fashion-mnist`")
def test_fmnist_from_the_debian_package() -> None:
    data = load_dataset("fmnist", download=False)
    assert data.x.shape == (70_000, 1, 28, 28) and data.x.dtype == torch.uint8
    assert data.y.dtype == torch.int64 and data.num_classes == 10 and data.kind == "image"
    assert data.y.bincount().tolist() == [7000] * 10
    assert data.y[:5].tolist() == [9, 0, 0, 3, 0]  # the first training labels
    assert data.y[60_000:60_005].tolist() == [9, 2, 1, 1, 6]  # the first test labels, pooled after training
    assert data.mean[0] == pytest.approx(0.2862, abs=1e-3) and data.std[0] == pytest.approx(0.3529, abs=1e-3)
    assert data.class_names[9] == "Ankle boot"


@pytest.mark.skipif(not DEBIAN_FMNIST.is_dir(), reason="needs `apt-get install dataset-fashion-mnist`")
def test_fmnist_num_samples_keeps_a_fixed_class_balanced_subset() -> None:
    full = load_dataset("fmnist", download=False)
    small, larger = (load_dataset("fmnist", download=False, num_samples=n) for n in (2_005, 4_000))
    assert small.x.shape == (2_005, 1, 28, 28) and small.y.bincount().tolist() == [201] * 5 + [200] * 5
    assert torch.equal(small.x, load_dataset("fmnist", download=False, num_samples=2_005).x)  # a fixed draw
    # the images are the full set's, with their labels, and a smaller subset lies inside a larger one
    index = {bytes(image.numpy()): label for image, label in zip(full.x, full.y.tolist(), strict=True)}
    assert all(index[bytes(image.numpy())] == label for image, label in zip(small.x, small.y.tolist(), strict=True))
    in_larger = {bytes(image.numpy()) for image in larger.x}
    assert all(bytes(image.numpy()) in in_larger for image in small.x)
    with pytest.raises(ValueError, match="num_samples must be an integer in 10..70,000, got 5"):
        load_dataset("fmnist", download=False, num_samples=5)


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "raw"])
@pytest.mark.parametrize("subdir", ["", "fashion-mnist"])
def test_fmnist_from_generated_idx_files(tmp_path: Path, compress: bool, subdir: str) -> None:
    parts = write_fmnist(tmp_path / "root" / subdir, compress)
    data = load_dataset("fmnist", root=tmp_path / "root", download=False)
    expected_x = np.concatenate([parts["train-images-idx3-ubyte"], parts["t10k-images-idx3-ubyte"]])
    assert data.x.shape == (20, 1, 28, 28)
    assert np.array_equal(data.x[:, 0].numpy(), expected_x)
    assert data.y.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 7, 8, 9, 0, 1, 2, 3, 4, 5, 6]
    pixels = expected_x / 255.0
    assert data.mean[0] == pytest.approx(pixels.mean()) and data.std[0] == pytest.approx(pixels.std())


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "raw"])
def test_truncated_idx_is_corrupt_and_named(tmp_path: Path, compress: bool) -> None:
    write_fmnist(tmp_path, compress)
    path = tmp_path / ("t10k-images-idx3-ubyte" + (".gz" if compress else ""))
    truncated = idx_bytes(np.zeros((10, 28, 28)))[:-100]
    path.write_bytes(gzip.compress(truncated) if compress else truncated)
    with pytest.raises(CorruptDataError, match=rf"{path.name}: truncated.*\(10, 28, 28\)"):
        load_dataset("fmnist", root=tmp_path, download=False)


def test_idx_with_wrong_magic_or_broken_gzip_is_corrupt(tmp_path: Path) -> None:
    write_fmnist(tmp_path, compress=False)
    labels = tmp_path / "train-labels-idx1-ubyte"
    labels.write_bytes(b"\x00\x00\x0d\x01" + labels.read_bytes()[4:])  # type code 0x0d is float32
    with pytest.raises(CorruptDataError, match="train-labels-idx1-ubyte: magic number 0x00000d01"):
        load_dataset("fmnist", root=tmp_path, download=False)
    labels.unlink()
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"0123456789")[:12])
    with pytest.raises(CorruptDataError, match="train-labels-idx1-ubyte.gz: not a readable gzip file"):
        load_dataset("fmnist", root=tmp_path, download=False)


def test_idx_whose_header_declares_more_than_memory_holds_is_refused_before_decompressing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_fmnist(tmp_path, compress=True)
    images = tmp_path / "train-images-idx3-ubyte.gz"  # a gzip bomb: 12 MB of zeros in 12 kB
    images.write_bytes(gzip.compress(idx_bytes(np.zeros((12, 1000, 1000), np.uint8))))
    monkeypatch.setattr(limits, "available_memory", lambda: 4_000_000)
    tracemalloc.start()
    try:
        with pytest.raises(DataTooLargeError, match=r"train-images-idx3-ubyte.gz: the 12×1000×1000 bytes its header "
                                                    r"declares need 12.0 MB, more than the 4.0 MB of memory "
                                                    r"available$"):
            load_dataset("fmnist", root=tmp_path, download=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000  # the 12 MB were never read
    monkeypatch.undo()
    images.write_bytes(gzip.compress(struct.pack(">HBB3I", 0, 0x08, 3, 60_000, 100_000, 100_000)))  # header only
    with pytest.raises(DataTooLargeError, match=r"the 60000×100000×100000 bytes its header declares need 600.0 TB"):
        load_dataset("fmnist", root=tmp_path, download=False)


def test_fmnist_labels_out_of_range_are_corrupt(tmp_path: Path) -> None:
    write_fmnist(tmp_path, compress=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 10]), compress=False)
    with pytest.raises(CorruptDataError, match=r"train-labels-idx1-ubyte: labels range over 0..10"):
        load_dataset("fmnist", root=tmp_path, download=False)


def test_mnist_files_in_the_bare_root_are_not_taken_for_fmnist(tmp_path: Path) -> None:
    write_fmnist(tmp_path, compress=True)
    # MNIST's files have the same names; its labels are unbalanced (5,923 zeros, 6,742 ones, ... in training)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([0, 1, 1, 2, 3, 4, 5, 6, 7, 8]), compress=True)
    with pytest.raises(CorruptDataError, match=r"train-labels-idx1-ubyte.gz: not Fashion-MNIST's labels: class "
                                               r"counts range over 0..2.*MNIST"):
        load_dataset("fmnist", root=tmp_path, download=False)


# ---------------------------------------------------------------- missing data and downloads


def test_missing_data_lists_every_place_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system_dir = tmp_path / "usr-share-fashion-mnist"
    monkeypatch.setattr(fmnist_source, "SYSTEM_DIRS", [system_dir])
    monkeypatch.setenv("CAFEBENCH_DATA", str(tmp_path / "env"))
    (tmp_path / "explicit").mkdir()  # an explicit root must exist (see the next test)
    with pytest.raises(DataNotFoundError) as caught:
        load_dataset("fmnist", root=tmp_path / "explicit")
    message = str(caught.value)
    for base in (tmp_path / "explicit", tmp_path / "env", Path.cwd() / "datasets"):
        for place in (base, base / "fashion-mnist", base / "FashionMNIST" / "raw"):
            assert f"  - {place}\n" in message
    assert f"  - {system_dir}\n" in message
    assert "no download attempted" in message and "apt-get install dataset-fashion-mnist" in message


def test_an_explicit_root_that_is_no_folder_is_refused_not_skipped(tmp_path: Path) -> None:
    # Skipped, it let the system's Fashion-MNIST (or a dataset taking no root) stand in for the data asked for.
    for dataset in ("fmnist", "synthetic"):
        with pytest.raises(DataNotFoundError, match=rf"^data root '{tmp_path}/nope' \(data.root\) does not exist; "
                                                    r"give the folder that holds the data .*\./datasets$"):
            load_dataset(dataset, root=tmp_path / "nope")
    (tmp_path / "file").write_text("")
    with pytest.raises(DataNotFoundError, match=r"data root '.*/file' \(data.root\) is not a folder"):
        load_dataset("synthetic", root=str(tmp_path / "file"))
    assert len(load_dataset("synthetic", root=tmp_path, num_samples=20)) == 20  # an existing root is fine


@pytest.mark.parametrize("dataset, option, value, message", [
    ("fmnist", "num_samples", 2000.0, "num_samples must be an integer in 10..70,000, got 2000.0"),
    ("fmnist", "num_samples", True, "num_samples must be an integer in 10..70,000, got True"),
    ("fmnist", "download", "yes", "download must be true or false, got 'yes'"),
    ("cifar10", "download", 1, "download must be true or false, got 1"),
    ("tinyimagenet", "cache", "no", "cache must be true or false, got 'no'"),
    ("agnews", "seq_len", 10**9, "seq_len must be an integer in 1..65,536, got 1000000000"),
    ("agnews", "vocab_size", "big", "vocab_size must be an integer in 3..16,777,216, got 'big'"),
])
def test_options_of_the_wrong_type_or_size_are_refused_before_any_data_is_read(dataset, option, value, message):
    with pytest.raises(ValueError, match=rf"^{dataset}: {re.escape(message)}$"):
        load_dataset(dataset, **{option: value})  # no data root holds these datasets: the option is checked first


def test_download_option_and_failure_are_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fmnist_source, "SYSTEM_DIRS", [])
    monkeypatch.delenv("CAFEBENCH_NO_DOWNLOAD")
    destinations: list[Path] = []

    def failing_fetch(destination: Path) -> Path:
        destinations.append(destination)
        raise OSError("Name or service not known")

    monkeypatch.setattr(fmnist_source, "_fetch", failing_fetch)
    with pytest.raises(DataNotFoundError, match="download failed: Name or service not known"):
        load_dataset("fmnist", root=tmp_path)
    assert destinations == [tmp_path / "fashion-mnist"]
    with pytest.raises(DataNotFoundError, match="no download attempted"):
        load_dataset("fmnist", root=tmp_path, download=False)
    monkeypatch.setenv("CAFEBENCH_NO_DOWNLOAD", "1")
    with pytest.raises(DataNotFoundError, match="no download attempted"):
        load_dataset("fmnist", root=tmp_path)
    assert len(destinations) == 1


def test_missing_cifar_without_download(tmp_path: Path) -> None:
    with pytest.raises(
        DataNotFoundError, match=r"(?s)cifar-100-python.*no download attempted.*cifar-100-python"
    ):
        load_dataset("cifar100", root=tmp_path, download=False)


# ---------------------------------------------------------------- CIFAR (python pickles)


class Python2StylePickler(pickle._Pickler):  # type: ignore[name-defined]
    """Protocol 2 as Python 2 wrote the CIFAR files: strings as BINSTRING, numpy under ``numpy.core``."""

    dispatch = dict(pickle._Pickler.dispatch)  # type: ignore[attr-defined]

    def save_python2_string(self, obj: str | bytes) -> None:
        data = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = save_python2_string
    dispatch[bytes] = save_python2_string

    def save_global(self, obj: object, name: str | None = None) -> None:
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{obj.__qualname__}\n".encode())
        self.memoize(obj)


def python2_pickle(path: Path, record: object) -> None:
    with path.open("wb") as stream:
        Python2StylePickler(stream, protocol=2).dump(record)


def python3_pickle(path: Path, record: object) -> None:
    path.write_bytes(pickle.dumps(record))


def write_cifar(
    root: Path, layout: CifarLayout, writer: PickleWriter, per_batch: int = 3
) -> tuple[np.ndarray, list[int]]:
    directory = root / layout.folder
    directory.mkdir(parents=True)
    rng = np.random.default_rng(1)
    all_data, all_labels = [], []
    for index, name in enumerate(layout.batch_files):
        data = rng.integers(0, 256, (per_batch, 3072)).astype(np.uint8)
        labels = [(index * per_batch + i) % layout.num_classes for i in range(per_batch)]
        record = {b"batch_label": f"batch {index}".encode(), layout.labels_key: labels, b"data": data}
        record[b"filenames"] = [f"image_{index}_{i}.png".encode() for i in range(per_batch)]
        if layout is CIFAR100:
            record[b"coarse_labels"] = [label // 5 for label in labels]
        writer(directory / name, record)
        all_data.append(data)
        all_labels += labels
    names = [f"class-{i}".encode() for i in range(layout.num_classes)]
    writer(directory / layout.meta_file, {layout.names_key: names, b"num_cases_per_batch": per_batch})
    return np.concatenate(all_data), all_labels


@pytest.mark.parametrize("layout", [CIFAR10, CIFAR100], ids=lambda layout: layout.name)
@pytest.mark.parametrize("writer", [python2_pickle, python3_pickle], ids=["python2-format", "python3-format"])
def test_cifar_from_generated_batches(tmp_path: Path, layout: CifarLayout, writer: PickleWriter) -> None:
    rows, labels = write_cifar(tmp_path, layout, writer)
    data = load_dataset(layout.name, root=tmp_path, download=False)
    assert data.x.shape == (len(layout.batch_files) * 3, 3, 32, 32) and data.x.dtype == torch.uint8
    assert data.y.tolist() == labels and data.num_classes == layout.num_classes
    # a row holds the red plane, then green, then blue, each row-major
    assert data.x[0, 1, 0, 0] == rows[0, 1024] and data.x[2, 2, 31, 30] == rows[2, 3070]
    assert np.array_equal(data.x.reshape(len(rows), -1).numpy(), rows)
    assert data.class_names[:2] == ["class-0", "class-1"] and len(data.class_names) == layout.num_classes
    assert data.mean[2] == pytest.approx(rows[:, 2048:].mean() / 255)


def test_python2_style_batches_name_the_legacy_numpy_module(tmp_path: Path) -> None:
    write_cifar(tmp_path, CIFAR10, python2_pickle)
    raw = (tmp_path / CIFAR10.folder / "data_batch_1").read_bytes()
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in raw and b"U\x04data" in raw


class SystemCall:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Callable[[str], object], tuple[str]]:
        return os.system, (self.command,)


class ExecCall(SystemCall):
    def __reduce__(self) -> tuple[Callable[[str], object], tuple[str]]:
        return exec, (self.command,)


@pytest.mark.parametrize(
    ("payload", "refused"), [(SystemCall, r"(posix|nt)\.system"), (ExecCall, r"builtins\.exec")]
)
def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path, payload: type, refused: str) -> None:
    write_cifar(tmp_path, CIFAR10, python3_pickle)
    marker = tmp_path / "pwned"
    command = f"touch {marker}" if payload is SystemCall else f"open({str(marker)!r}, 'w').close()"
    batch = tmp_path / CIFAR10.folder / "data_batch_3"
    batch.write_bytes(pickle.dumps({b"data": payload(command), b"labels": []}))
    with pytest.raises(CorruptDataError, match=rf"data_batch_3: refusing to unpickle {refused}"):
        load_dataset("cifar10", root=tmp_path, download=False)
    assert not marker.exists()


def test_cifar_batch_with_wrong_content_is_corrupt(tmp_path: Path) -> None:
    write_cifar(tmp_path, CIFAR10, python3_pickle)
    batch = tmp_path / CIFAR10.folder / "test_batch"
    python3_pickle(batch, {b"data": np.zeros((2, 3072), np.uint8), b"labels": [1]})
    with pytest.raises(CorruptDataError, match=r"test_batch: expected 2 integer labels"):
        load_dataset("cifar10", root=tmp_path, download=False)
    batch.write_bytes(batch.read_bytes()[:50])
    with pytest.raises(CorruptDataError, match=r"test_batch: not a readable pickle"):
        load_dataset("cifar10", root=tmp_path, download=False)


def object_dtype_meta(path: Path) -> None:
    """A ``batches.meta`` naming only the allowed globals, whose array declares an object dtype over raw bytes: numpy
    would read a pointer at the address the file chose (a segfault with the unpickler that admitted numpy.dtype)."""
    python2_pickle(path, {b"label_names": np.array([0xDEADBEEF], dtype=np.uint64)})
    raw = path.read_bytes()
    assert raw.count(b"U\x02u8") == 1
    path.write_bytes(raw.replace(b"U\x02u8", b"U\x02O8"))


def test_object_dtype_in_a_crafted_pickle_is_refused_not_read(tmp_path: Path) -> None:
    write_cifar(tmp_path, CIFAR10, python3_pickle)
    object_dtype_meta(tmp_path / CIFAR10.folder / "batches.meta")
    refused = r"batches.meta: not a readable pickle .*dtype '\|O' is not a plain numeric dtype"
    with pytest.raises(CorruptDataError, match=refused):
        load_dataset("cifar10", root=tmp_path, download=False)


def test_big_endian_and_fortran_arrays_are_rebuilt_exactly(tmp_path: Path) -> None:
    arrays = {b"be": np.arange(6, dtype=">i4").reshape(2, 3),
              b"f": np.asfortranarray(np.eye(3, dtype=np.float32)[:, :2])}
    path = tmp_path / "record"
    python2_pickle(path, arrays)
    loaded = load_numpy_pickle(path)
    for key, array in arrays.items():
        assert loaded[key].dtype == array.dtype and np.array_equal(loaded[key], array)
    path.write_bytes(pickle.dumps({b"x": np.zeros(2, dtype=[("a", "u1"), ("b", "u1")])}))
    with pytest.raises(CorruptDataError, match="record: not a readable pickle"):
        load_numpy_pickle(path)


def test_damaged_pickles_load_or_raise_corrupt_data_error_only(tmp_path: Path) -> None:
    path = tmp_path / "batch"
    python2_pickle(path, {b"data": np.zeros((1, 48), dtype=np.uint8), b"labels": [1, 2]})
    raw = path.read_bytes()  # 229 bytes, mostly opcodes: most flips hit the stream, not the pixels
    rng = np.random.default_rng(0)
    outcomes = {"loaded": 0, "corrupt": 0}
    for _ in range(300):
        damaged = bytearray(raw)
        damaged[rng.integers(0, len(raw))] = rng.integers(0, 256)
        path.write_bytes(bytes(damaged))
        try:
            load_numpy_pickle(path)
            outcomes["loaded"] += 1
        except CorruptDataError:
            outcomes["corrupt"] += 1
    assert outcomes["corrupt"] > 100 and sum(outcomes.values()) == 300
    path.write_bytes(pickle.PROTO + b"\x04" + pickle.BINBYTES8 + (2**62).to_bytes(8, "little"))
    with pytest.raises(CorruptDataError, match=r"batch: not a readable pickle \(MemoryError"):
        load_numpy_pickle(path)


def test_cifar_root_may_be_the_batch_folder_itself(tmp_path: Path) -> None:
    rows, labels = write_cifar(tmp_path, CIFAR10, python3_pickle)
    data = load_dataset("cifar10", root=tmp_path / CIFAR10.folder, download=False)
    assert data.y.tolist() == labels and np.array_equal(data.x.reshape(len(rows), -1).numpy(), rows)


# ---------------------------------------------------------------- Tiny ImageNet (JPEG tree)

WNIDS = ["n09999999", "n01111111"]  # deliberately not sorted: labels follow wnids.txt order
COLOURS = {"n09999999": (200, 30, 30), "n01111111": (20, 40, 220)}


def write_tiny_imagenet(root: Path) -> Path:
    directory = root / "tiny-imagenet-200"
    (directory / "val" / "images").mkdir(parents=True)
    (directory / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    (directory / "words.txt").write_text(
        "n09999999\tred thing, crimson\nn01111111\tblue thing\nn00000001\tother\n"
    )
    for wnid in WNIDS:
        images = directory / "train" / wnid / "images"
        images.mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (64, 64), COLOURS[wnid]).save(images / f"{wnid}_{i}.JPEG", quality=95)
    Image.new("L", (64, 64), 128).save(directory / "val" / "images" / "val_0.JPEG")  # grayscale, as some are
    Image.new("RGB", (64, 64), COLOURS["n09999999"]).save(directory / "val" / "images" / "val_1.JPEG")
    (directory / "val" / "val_annotations.txt").write_text(
        "val_0.JPEG\tn01111111\t0\t0\t63\t63\nval_1.JPEG\tn09999999\t3\t4\t50\t60\n"
    )
    return directory


def test_tinyimagenet_from_a_generated_tree(tmp_path: Path) -> None:
    directory = write_tiny_imagenet(tmp_path)
    data = load_dataset("tinyimagenet", root=tmp_path)
    assert data.x.shape == (8, 3, 64, 64) and data.x.dtype == torch.uint8 and data.num_classes == 2
    assert data.y.tolist() == [0, 0, 0, 1, 1, 1, 1, 0]
    assert data.class_names == ["red thing, crimson", "blue thing"]
    centre = data.x[:, :, 32, 32].int()
    expected = [COLOURS[WNIDS[0]]] * 3 + [COLOURS[WNIDS[1]]] * 3 + [(128, 128, 128), COLOURS[WNIDS[0]]]
    assert (centre - torch.tensor(expected)).abs().max() <= 3
    assert (directory / "cafebench-decoded.pt").is_file()

    # the cache is used: a broken JPEG goes unnoticed while the listing still matches the cache
    broken = directory / "train" / WNIDS[1] / "images" / f"{WNIDS[1]}_2.JPEG"
    broken.write_bytes(b"definitely not a jpeg")
    assert torch.equal(load_dataset("tinyimagenet", root=tmp_path).x, data.x)
    with pytest.raises(CorruptDataError, match=f"{broken.name}: cannot decode image"):
        load_dataset("tinyimagenet", root=tmp_path, cache=False)


def test_tinyimagenet_cache_is_rebuilt_when_the_tree_changes(tmp_path: Path) -> None:
    directory = write_tiny_imagenet(tmp_path)
    assert len(load_dataset("tinyimagenet", root=tmp_path)) == 8
    (directory / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn01111111\t0\t0\t63\t63\n")
    data = load_dataset("tinyimagenet", root=tmp_path)
    assert data.y.tolist() == [0, 0, 0, 1, 1, 1, 1]


def test_tinyimagenet_annotation_with_unknown_wnid_is_corrupt(tmp_path: Path) -> None:
    directory = write_tiny_imagenet(tmp_path)
    (directory / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn07777777\t0\t0\t63\t63\n")
    with pytest.raises(CorruptDataError, match=r"val_annotations.txt:1: expected"):
        load_dataset("tinyimagenet", root=tmp_path)


def test_tinyimagenet_with_val_in_class_folders_loads_the_same_images(tmp_path: Path) -> None:
    write_tiny_imagenet(tmp_path / "a")
    standard = load_dataset("tinyimagenet", root=tmp_path / "a", cache=False)
    directory = write_tiny_imagenet(tmp_path / "b")
    val = directory / "val"
    for line in (val / "val_annotations.txt").read_text().splitlines():
        name, wnid = line.split("\t")[:2]
        (val / wnid / "images").mkdir(parents=True, exist_ok=True)
        (val / "images" / name).rename(val / wnid / "images" / name)
    (val / "images").rmdir()
    (val / "val_annotations.txt").unlink()
    reorganised = load_dataset("tinyimagenet", root=tmp_path / "b", cache=False)
    assert torch.equal(reorganised.y, standard.y) and torch.equal(reorganised.x, standard.x)


def test_partly_extracted_tinyimagenet_is_refused_before_decoding(tmp_path: Path) -> None:
    directory = write_tiny_imagenet(tmp_path)
    (directory / "val" / "images" / "val_1.JPEG").unlink()
    with pytest.raises(CorruptDataError, match=r"val_annotations.txt: 1 of the 2 listed images are missing"):
        load_dataset("tinyimagenet", root=tmp_path)
    short = directory / "train" / WNIDS[1] / "images" / f"{WNIDS[1]}_2.JPEG"
    short.unlink()
    (directory / "train" / WNIDS[0] / "images" / f"{WNIDS[0]}_0.JPEG").write_bytes(b"never decoded")
    with pytest.raises(CorruptDataError, match=rf"train: class {WNIDS[1]} has 2 images but {WNIDS[0]} has 3"):
        load_dataset("tinyimagenet", root=tmp_path)


# ---------------------------------------------------------------- AG News (CSV)


def write_agnews(root: Path) -> None:
    directory = root / "ag_news_csv"
    directory.mkdir(parents=True)
    train = [
        ("3", "Stocks rise", "Stocks rise again; stocks gain."),
        ("2", "Team wins", "The team wins."),
        ("4", "New chip", "Intel's chip is fast."),
    ]
    test = [("1", "Peace peace peace peace", "STOCKS, chips: TEAM up 5% on day 2")]
    for name, rows in (("train.csv", train), ("test.csv", test)):
        with (directory / name).open("w", newline="") as stream:
            csv.writer(stream, quoting=csv.QUOTE_ALL).writerows(rows)


def test_agnews_tokens_and_vocabulary(tmp_path: Path) -> None:
    write_agnews(tmp_path)
    data = load_dataset("agnews", root=tmp_path, vocab_size=6, seq_len=8)
    assert data.kind == "text" and data.vocab_size == 6 and data.num_classes == 4
    assert data.x.dtype == torch.int64 and data.x.shape == (4, 8)
    assert data.y.tolist() == [2, 1, 3, 0]
    assert data.mean == () and data.class_names == ["World", "Sports", "Business", "Sci/Tech"]
    # training counts: stocks 3; chip, rise, team, wins 2 each -> 4 words fit, ties broken alphabetically
    stocks, chip, rise, team = 2, 3, 4, 5
    unk, pad = 1, 0
    assert data.x[0].tolist() == [stocks, rise, stocks, rise, unk, stocks, unk, pad]
    assert data.x[1].tolist() == [team, unk, unk, team, unk, pad, pad, pad]  # "wins" lost the tie
    assert data.x[2].tolist() == [unk, chip, unk, chip, unk, unk, pad, pad]
    # test words never enter the vocabulary ("peace" x4); case is folded; cut at seq_len
    assert data.x[3].tolist() == [unk, unk, unk, unk, stocks, unk, team, unk]


def test_agnews_rejects_bad_rows_and_options(tmp_path: Path) -> None:
    write_agnews(tmp_path)
    with pytest.raises(ValueError, match=r"^agnews: vocab_size must be an integer in 3..16,777,216, got 2$"):
        load_dataset("agnews", root=tmp_path, vocab_size=2)
    with pytest.raises(ValueError, match=r"^agnews: seq_len must be an integer in 1..65,536, got 0$"):
        load_dataset("agnews", root=tmp_path, seq_len=0)
    (tmp_path / "ag_news_csv" / "test.csv").write_text('"5","Title","Body"\n')
    with pytest.raises(CorruptDataError, match=r"test.csv: labels range over 4..4, expected 0..3"):
        load_dataset("agnews", root=tmp_path)
    (tmp_path / "ag_news_csv" / "test.csv").write_text('"1","Title only"\n')
    with pytest.raises(CorruptDataError, match=r"test.csv:1: expected 3 columns"):
        load_dataset("agnews", root=tmp_path)


def test_agnews_variants_header_bom_and_torchtext_folder(tmp_path: Path) -> None:
    write_agnews(tmp_path / "standard")
    expected = load_dataset("agnews", root=tmp_path / "standard", vocab_size=6, seq_len=8)
    variant = tmp_path / "variant" / "AG_NEWS"  # torchtext's folder
    variant.mkdir(parents=True)
    for name in ("train.csv", "test.csv"):
        body = (tmp_path / "standard" / "ag_news_csv" / name).read_text()
        (variant / name).write_text('"Class Index","Title","Description"\r\n' + body, encoding="utf-8-sig")
    assert (variant / "train.csv").read_bytes().startswith(b"\xef\xbb\xbf")
    data = load_dataset("agnews", root=tmp_path / "variant", vocab_size=6, seq_len=8)
    assert torch.equal(data.x, expected.x) and torch.equal(data.y, expected.y)
    (variant / "test.csv").write_text('"Class Index","Title","Description"\n"1","a"\n')
    with pytest.raises(CorruptDataError, match=r"test.csv:2: expected 3 columns"):
        load_dataset("agnews", root=tmp_path / "variant")


def test_agnews_html_entities_are_decoded_not_tokens(tmp_path: Path) -> None:
    directory = tmp_path / "ag_news_csv"
    directory.mkdir()
    rows = [("4", "Intel #39;s &lt;b&gt;chip&lt;/b&gt;", "AT&amp;T says quot;fast quot; for #36;5"),
            ("1", "Intel #39;s chip", "chip")]
    for name in ("train.csv", "test.csv"):
        with (directory / name).open("w", newline="") as stream:
            csv.writer(stream, quoting=csv.QUOTE_ALL).writerows(rows)
    data = load_dataset("agnews", root=tmp_path, vocab_size=12, seq_len=10)
    # tokens: intel's chip at t says fast for 5 / intel's chip chip -- no "39", "lt", "gt", "b", "amp", "quot", "36"
    assert data.vocab_size == 2 + 8
    chip, intels = 2, 3  # chip 3 times, intel's twice, then the rest once each, alphabetically
    assert data.x[1].tolist() == [intels, chip, chip] + [0] * 7
    assert data.x[0, :2].tolist() == [intels, chip]


# ---------------------------------------------------------------- bundled and synthetic


def test_digits_shape_count_and_scaling() -> None:
    data = load_dataset("digits")
    assert data.x.shape == (1797, 1, 8, 8) and data.x.dtype == torch.uint8 and data.num_classes == 10
    assert data.y.bincount().tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    # sklearn's first digit is a 0 whose second row is 0 0 13 15 10 15 5 0 (ink 0..16)
    assert data.x[0, 0, 1].tolist() == [round(v * 255 / 16) for v in (0, 0, 13, 15, 10, 15, 5, 0)]
    assert int(data.x.max()) == 255


def test_mnist5k_shape_and_count() -> None:
    data = load_dataset("mnist5k")
    assert data.x.shape == (5000, 1, 28, 28) and data.x.dtype == torch.uint8 and data.num_classes == 10
    assert data.y.bincount().tolist() == [500] * 10
    assert int(data.x.max()) == 255 and data.mean[0] == pytest.approx(0.1313, abs=1e-3)


def test_synthetic_is_deterministic_per_seed() -> None:
    first, again = load_dataset("synthetic", seed=3), load_dataset("synthetic", seed=3)
    other = load_dataset("synthetic", seed=4)
    assert torch.equal(first.x, again.x) and torch.equal(first.y, again.y)
    assert not torch.equal(first.x, other.x)
    assert first.x.shape == (2000, 1, 16, 16) and first.y.bincount().tolist() == [200] * 10
    small = load_dataset("synthetic", num_samples=30, num_classes=3, image_size=8, channels=3)
    assert small.x.shape == (30, 3, 8, 8) and len(small.mean) == 3 and small.num_classes == 3


@pytest.mark.parametrize("options, message", [
    ({"channels": 5}, "channels must be an integer in 1..4, got 5"),
    ({"image_size": 100_000}, "image_size must be an integer in 1..4,096, got 100000"),
    ({"image_size": 16.0}, "image_size must be an integer in 1..4,096, got 16.0"),
    ({"seed": "x"}, "seed must be an integer in -9,223,372,036,854,775,808..9,223,372,036,854,775,807, got 'x'"),
    ({"num_samples": "many"}, "num_samples must be an integer of at least 2, got 'many'"),
    ({"num_samples": 20, "num_classes": 3000}, "num_classes must be an integer in 2..20, got 3000"),
    ({"num_samples": 10**7}, "num_samples=10,000,000 needs 43.5 GB for images of 1×16×16 (17 bytes a pixel while "
                             "drawn), more than the 1.0 GB of memory available; num_samples may be 2..229,779 here"),
    ({"num_samples": 10, "image_size": 4096, "channels": 4},
     "images of 4×4096×4096 (17 bytes a pixel while drawn) need 2.3 GB even at num_samples=2, more than the 1.0 GB of "
     "memory available"),
])
def test_synthetic_options_are_bounded_before_drawing(monkeypatch: pytest.MonkeyPatch, options, message) -> None:
    monkeypatch.setattr(limits, "available_memory", lambda: 1_000_000_000)
    started = time.perf_counter()
    with pytest.raises(ValueError, match=rf"^synthetic: {re.escape(message)}$"):
        load_dataset("synthetic", **options)
    assert time.perf_counter() - started < 0.5  # refused, not drawn


def test_synthetic_is_learnable_by_nearest_class_mean() -> None:
    data = load_dataset("synthetic", num_samples=1000, seed=0)
    x = data.x.flatten(1).float() / 255
    train, test = slice(0, 500), slice(500, 1000)
    means = torch.stack([x[train][data.y[train] == c].mean(0) for c in range(data.num_classes)])
    predicted = torch.cdist(x[test], means).argmin(1)
    accuracy = (predicted == data.y[test]).float().mean().item()
    assert accuracy > 0.9  # chance is 0.1
