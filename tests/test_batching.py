import pytest
import torch

from bench.data.batching import Augment, BatchMaker, default_augment
from bench.data.dataset import Dataset


def image_dataset(name: str = "cifar10", n: int = 40, channels: int = 3, size: int = 8) -> Dataset:
    g = torch.Generator().manual_seed(123)
    x = torch.randint(1, 256, (n, channels, size, size), dtype=torch.uint8, generator=g)
    mean = tuple(0.2 + 0.1 * c for c in range(channels))
    std = tuple(0.25 + 0.05 * c for c in range(channels))
    return Dataset(name, x, torch.arange(n) % 5, num_classes=5, mean=mean, std=std)


def text_dataset(n: int = 12) -> Dataset:
    tokens = torch.randint(0, 100, (n, 16), generator=torch.Generator().manual_seed(0))
    return Dataset("agnews", tokens, torch.arange(n) % 4, num_classes=4, kind="text", vocab_size=100)


def raw(dataset: Dataset, normalised: torch.Tensor) -> torch.Tensor:
    """Invert the normalisation back to uint8 pixel values."""
    mean = torch.tensor(dataset.mean).view(1, -1, 1, 1)
    std = torch.tensor(dataset.std).view(1, -1, 1, 1)
    return torch.round((normalised * std + mean) * 255).to(torch.uint8)


def reference_crop_flip(image: torch.Tensor, pad: int, dy: int, dx: int, flip: bool) -> torch.Tensor:
    """Slow per-pixel crop of the zero-padded image, then optional mirror."""
    channels, height, width = image.shape
    padded = torch.zeros(channels, height + 2 * pad, width + 2 * pad, dtype=image.dtype)
    for c in range(channels):
        for r in range(height):
            for w in range(width):
                padded[c, r + pad, w + pad] = image[c, r, w]
    out = torch.zeros_like(image)
    for c in range(channels):
        for r in range(height):
            for w in range(width):
                source = width - 1 - w if flip else w
                out[c, r, w] = padded[c, r + dy, source + dx]
    return out


def matches_some_window(image: torch.Tensor, output: torch.Tensor, pad: int, flips: tuple[bool, ...]) -> bool:
    return any(
        torch.equal(output, reference_crop_flip(image, pad, dy, dx, flip))
        for dy in range(2 * pad + 1)
        for dx in range(2 * pad + 1)
        for flip in flips
    )


def train_labels_and_inputs(maker: BatchMaker, idx: torch.Tensor, seed: int, **kwargs):
    batches = list(maker.train_batches(idx, 7, torch.Generator().manual_seed(seed), **kwargs))
    return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])


def test_one_epoch_covers_indices_exactly_once():
    dataset = image_dataset()
    maker = BatchMaker(dataset)  # no augmentation: inputs identify their samples
    idx = torch.tensor([3, 17, 5, 29, 0, 11, 38, 21, 8, 14, 2])
    batches = list(maker.train_batches(idx, 4, torch.Generator().manual_seed(0)))
    assert [len(y) for _, y in batches] == [4, 4, 3]
    inputs = raw(dataset, torch.cat([x for x, _ in batches]))
    seen = [int((dataset.x == image).flatten(1).all(1).nonzero()) for image in inputs]
    assert sorted(seen) == sorted(idx.tolist())
    assert seen != idx.tolist()  # shuffled
    assert torch.equal(torch.cat([y for _, y in batches]), dataset.y[torch.tensor(seen)])


def test_epochs_reshuffle_and_drop_last():
    maker = BatchMaker(image_dataset())
    idx = torch.arange(10)
    batches = list(maker.train_batches(idx, 4, torch.Generator().manual_seed(0), epochs=3, drop_last=True))
    assert len(batches) == 3 * maker.num_batches(10, 4, drop_last=True) == 6
    assert all(len(y) == 4 for _, y in batches)
    assert maker.num_batches(10, 4) == 3 and maker.num_batches(8, 4) == 2
    first_epoch = torch.cat([x for x, _ in batches[:2]])
    second_epoch = torch.cat([x for x, _ in batches[2:4]])
    assert not torch.equal(first_epoch, second_epoch)


def test_same_seed_bitwise_identical_different_seed_different_order():
    maker = BatchMaker(image_dataset(), Augment(crop_padding=2, hflip=True))
    idx = torch.arange(40)
    x1, y1 = train_labels_and_inputs(maker, idx, seed=5, epochs=2)
    x2, y2 = train_labels_and_inputs(maker, idx, seed=5, epochs=2)
    x3, y3 = train_labels_and_inputs(maker, idx, seed=6, epochs=2)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(y1, y3)
    assert not torch.equal(x1, x3)


def test_crop_is_shifted_window_of_zero_padded_input():
    dataset = image_dataset(n=12, channels=2, size=6)
    pad = 2
    maker = BatchMaker(dataset, Augment(crop_padding=pad))
    no_aug = BatchMaker(dataset)
    idx = torch.arange(12)
    # Same generator seed: same shuffle, so batch i of both makers holds the same samples.
    plain = list(no_aug.train_batches(idx, 5, torch.Generator().manual_seed(1)))
    cropped = list(maker.train_batches(idx, 5, torch.Generator().manual_seed(1)))
    shifted = 0
    for (x_plain, y_plain), (x_crop, y_crop) in zip(plain, cropped, strict=True):
        assert torch.equal(y_plain, y_crop)
        for image, output in zip(raw(dataset, x_plain), raw(dataset, x_crop), strict=True):
            assert matches_some_window(image, output, pad, flips=(False,))
            shifted += not torch.equal(image, output)
    assert shifted >= 8  # offsets vary: most crops are not the centre window


def test_crop_and_flip_match_reference():
    dataset = image_dataset(n=16, channels=3, size=5)
    maker = BatchMaker(dataset, Augment(crop_padding=1, hflip=True))
    no_aug = BatchMaker(dataset)
    idx = torch.arange(16)
    ((x_plain, _),) = no_aug.train_batches(idx, 16, torch.Generator().manual_seed(3))
    ((x_aug, _),) = maker.train_batches(idx, 16, torch.Generator().manual_seed(3))
    for image, output in zip(raw(dataset, x_plain), raw(dataset, x_aug), strict=True):
        assert matches_some_window(image, output, pad=1, flips=(False, True))


def test_flip_flips():
    dataset = image_dataset(n=30, size=4)
    maker = BatchMaker(dataset, Augment(hflip=True))
    no_aug = BatchMaker(dataset)
    idx = torch.arange(30)
    ((x_plain, _),) = no_aug.train_batches(idx, 30, torch.Generator().manual_seed(4))
    ((x_flip, _),) = maker.train_batches(idx, 30, torch.Generator().manual_seed(4))
    flipped = 0
    for image, output in zip(x_plain, x_flip, strict=True):
        if torch.equal(output, image.flip(-1)):
            flipped += 1
        else:
            assert torch.equal(output, image)
    assert 5 <= flipped <= 25


def test_normalisation_of_known_value():
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).view(3, 1, 1, 1).expand(3, 2, 2, 2).contiguous()
    dataset = Dataset("tiny", x, torch.zeros(3, dtype=torch.int64), 1, mean=(0.5, 0.1), std=(0.25, 0.2))
    ((inputs, _),) = BatchMaker(dataset).eval_batches(torch.arange(3), 3)
    assert inputs.dtype == torch.float32
    expected_ch0 = torch.tensor([(v / 255 - 0.5) / 0.25 for v in (0, 51, 255)])
    expected_ch1 = torch.tensor([(v / 255 - 0.1) / 0.2 for v in (0, 51, 255)])
    assert torch.allclose(inputs[:, 0, 0, 0], expected_ch0, atol=1e-6)
    assert torch.allclose(inputs[:, 1, 1, 1], expected_ch1, atol=1e-6)
    assert torch.allclose(inputs[2, 1], torch.full((2, 2), 4.5), atol=1e-6)


def test_eval_batches_in_order_without_augmentation():
    dataset = image_dataset()
    maker = BatchMaker(dataset, Augment(crop_padding=4, hflip=True))
    idx = torch.tensor([9, 1, 30, 4, 22])
    batches = list(maker.eval_batches(idx, 2))
    assert [len(y) for _, y in batches] == [2, 2, 1]
    inputs = torch.cat([x for x, _ in batches])
    assert torch.equal(raw(dataset, inputs), dataset.x[idx])
    assert torch.equal(torch.cat([y for _, y in batches]), dataset.y[idx])
    assert torch.equal(inputs, maker.to_input(dataset.x[idx]))


def test_text_tokens_pass_through():
    dataset = text_dataset()
    maker = BatchMaker(dataset)
    idx = torch.arange(12)
    batches = list(maker.train_batches(idx, 5, torch.Generator().manual_seed(0)))
    tokens = torch.cat([x for x, _ in batches])
    labels = torch.cat([y for _, y in batches])
    assert tokens.dtype == torch.int64
    order = [int((dataset.x == row).all(1).nonzero()) for row in tokens]
    assert sorted(order) == list(range(12))
    assert torch.equal(tokens, dataset.x[order]) and torch.equal(labels, dataset.y[order])
    assert torch.equal(maker.to_input(dataset.x), dataset.x)


def test_default_augment_choices():
    assert default_augment(text_dataset()) is None
    assert default_augment(image_dataset("digits", size=8)) is None
    mnist, fmnist = (image_dataset(name, channels=1, size=28) for name in ("mnist", "fmnist"))
    assert default_augment(mnist) == Augment(crop_padding=2, hflip=False)
    assert default_augment(fmnist) == Augment(crop_padding=2, hflip=True)
    assert default_augment(image_dataset("cifar100", size=32)) == Augment(crop_padding=4, hflip=True)
    assert default_augment(image_dataset("tinyimagenet", size=64)) == Augment(crop_padding=4, hflip=True)


def test_invalid_arguments_rejected():
    with pytest.raises(ValueError, match="text"):
        BatchMaker(text_dataset(), Augment(hflip=True))
    maker = BatchMaker(image_dataset())
    with pytest.raises(ValueError, match="batch_size"):
        next(maker.eval_batches(torch.arange(4), 0))
    with pytest.raises(ValueError, match="idx"):
        next(maker.eval_batches(torch.arange(4.0), 2))
    with pytest.raises(ValueError, match="crop_padding"):
        Augment(crop_padding=-1)
    bad_stats = Dataset("x", torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64), 1)
    with pytest.raises(ValueError, match="mean and std"):
        BatchMaker(bad_stats)
