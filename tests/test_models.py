"""Early-exit networks: shapes, exits, naming, width slicing, errors, parameter counts, learning."""

from __future__ import annotations

import re
import warnings

import pytest
import torch
import torch.nn.functional as F
from fvcore.nn import FlopCountAnalysis
from torch.utils.flop_counter import FlopCounterMode

from bench.models import MODELS, EarlyExitNet, build_model
from bench.models.base import EXITS_PREFIX, STAGES_PREFIX, exit_prefix, stage_prefix

IMAGE_SHAPES = [(1, 28, 28), (3, 32, 32), (3, 64, 64), (1, 8, 8)]
EXPECTED_EXITS = {"conv3": 3, "resnet8": 3, "resnet20": 3, "resnet18": 4, "transformer4": 4}
VOCAB = 50
SEQ_LEN = 12


def make_input(input_shape: tuple[int, ...], batch: int, seed: int = 0) -> torch.Tensor:
    """A fixed batch: float images, or token ids with a few trailing pads (id 0)."""
    g = torch.Generator().manual_seed(seed)
    if len(input_shape) == 3:
        return torch.randn(batch, *input_shape, generator=g)
    tokens = torch.randint(1, VOCAB, (batch, *input_shape), generator=g)
    tokens[:, -3:] = 0
    return tokens


CASES = [(name, shape) for name in ("conv3", "resnet8", "resnet20", "resnet18") for shape in IMAGE_SHAPES]
CASES += [("transformer4", (SEQ_LEN,)), ("transformer4", (64,))]


@pytest.mark.parametrize(("name", "input_shape"), CASES)
def test_forward_gives_every_exit_and_upto_gives_the_same_leading_exits(name, input_shape):
    model = build_model(name, input_shape, 7, vocab_size=VOCAB, seed=0).eval()
    x = make_input(input_shape, batch=2 if name == "resnet18" else 3)
    with torch.no_grad():
        logits = model(x)
        feats = model.features(x)
        assert model.num_exits == EXPECTED_EXITS[name]
        assert [tuple(z.shape) for z in logits] == [(x.shape[0], 7)] * model.num_exits
        assert [f.shape[1] for f in feats] == [head.in_features for head in model.exits]
        for upto in range(1, model.num_exits):
            partial = model(x, upto=upto)
            assert len(partial) == upto
            for z_partial, z_full in zip(partial, logits, strict=False):
                assert torch.equal(z_partial, z_full)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_parameter_names_split_into_stages_and_exits(name):
    shape = (SEQ_LEN,) if name == "transformer4" else (3, 32, 32)
    model = build_model(name, shape, 10, vocab_size=VOCAB)
    names = [n for n, _ in model.named_parameters()] + [n for n, _ in model.named_buffers()]
    assert (STAGES_PREFIX, EXITS_PREFIX) == ("stages.", "exits.")
    assert all(n.startswith((STAGES_PREFIX, EXITS_PREFIX)) for n in names)
    assert model.num_exits == EXPECTED_EXITS[name]
    assert (stage_prefix(1), exit_prefix(1)) == ("stages.1.", "exits.1.")
    head_names = [n for n in names if n.startswith(EXITS_PREFIX)]
    assert head_names == [f"exits.{k}.{p}" for k in range(model.num_exits) for p in ("weight", "bias")]


def conv_bn(in_channels: int, out_channels: int, kernel: int) -> int:
    """Parameters of a bias-free conv followed by BatchNorm (weight and bias)."""
    return in_channels * out_channels * kernel * kernel + 2 * out_channels


def basic_block(in_channels: int, out_channels: int) -> int:
    projection = conv_bn(in_channels, out_channels, 1) if in_channels != out_channels else 0
    return conv_bn(in_channels, out_channels, 3) + conv_bn(out_channels, out_channels, 3) + projection


def resnet_backbone(channels: list[int], blocks: int) -> int:
    total, previous = conv_bn(3, channels[0], 3), channels[0]
    for c in channels:
        total += basic_block(previous, c) + (blocks - 1) * basic_block(c, c)
        previous = c
    return total


def backbone_and_head_counts(model: EarlyExitNet) -> tuple[int, int]:
    heads = sum(p.numel() for n, p in model.named_parameters() if n.startswith("exits."))
    return sum(p.numel() for p in model.parameters()) - heads, heads


@pytest.mark.parametrize(
    ("name", "backbone", "exit_channels"),
    [
        ("conv3", conv_bn(3, 32, 3) + conv_bn(32, 64, 3) + conv_bn(64, 128, 3), [32, 64, 128]),
        ("resnet8", resnet_backbone([16, 32, 64], 1), [16, 32, 64]),
        ("resnet20", resnet_backbone([16, 32, 64], 3), [16, 32, 64]),
        ("resnet18", resnet_backbone([64, 128, 256, 512], 2), [64, 128, 256, 512]),
    ],
)
def test_image_parameter_counts_match_the_architecture(name, backbone, exit_channels):
    model = build_model(name, (3, 32, 32), 10)
    assert backbone_and_head_counts(model) == (backbone, sum(c * 10 + 10 for c in exit_channels))


def test_parameter_counts_agree_with_the_published_sizes():
    # ResNet-20 with 1×1 projection shortcuts: 0.27M; CIFAR ResNet-18 without its classifier: 11,168,832.
    assert backbone_and_head_counts(build_model("resnet20", (3, 32, 32), 10))[0] == 271_824
    assert backbone_and_head_counts(build_model("resnet18", (3, 32, 32), 10))[0] == 11_168_832


def test_transformer_parameter_count_and_attention_macs():
    d, ff, classes = 128, 256, 10
    model = build_model("transformer4", (SEQ_LEN,), classes, vocab_size=VOCAB).eval()
    block = 4 * (d * d + d) + (d * ff + ff) + (ff * d + d) + 2 * 2 * d
    embedding = VOCAB * d + SEQ_LEN * d
    assert backbone_and_head_counts(model) == (embedding + 4 * block, 4 * (d * classes + classes))

    x = make_input((SEQ_LEN,), batch=2)
    per_block = 4 * SEQ_LEN * d * d + 2 * SEQ_LEN * d * ff + 2 * SEQ_LEN * SEQ_LEN * d
    expected_macs = 2 * (4 * per_block + 4 * d * classes)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    assert counter.get_total_flops() == 2 * expected_macs
    by_operator = FlopCountAnalysis(model, (x,)).by_operator()
    assert by_operator["linear"] + by_operator["matmul"] == expected_macs


class AsTuple(torch.nn.Module):
    """Returns the exits' logits as a tuple, which ``torch.jit.trace`` accepts as output."""

    def __init__(self, model: EarlyExitNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model(x))


@pytest.mark.parametrize(("name", "input_shape"), [("conv3", (1, 8, 8)), ("resnet8", (3, 32, 32)),
                                                    ("transformer4", (SEQ_LEN,))])
def test_models_trace_without_warnings(name, input_shape):
    model = build_model(name, input_shape, 5, vocab_size=VOCAB).eval()
    x = make_input(input_shape, batch=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.trace is deprecated, fvcore still uses it
        traced = torch.jit.trace(AsTuple(model), (x,))
    other = make_input(input_shape, batch=3, seed=1)
    for z_traced, z_eager in zip(traced(other), model(other), strict=True):
        torch.testing.assert_close(z_traced, z_eager)


def test_transformer_ignores_padding():
    model = build_model("transformer4", (SEQ_LEN,), 5, vocab_size=VOCAB, seed=0).eval()
    tokens = make_input((SEQ_LEN,), batch=2)[:, :SEQ_LEN - 3]
    padded = F.pad(tokens, (0, 3), value=0)
    for z_short, z_padded in zip(model(tokens), model(padded), strict=True):
        torch.testing.assert_close(z_short, z_padded, rtol=1e-5, atol=1e-5)
    all_pad = model(torch.zeros(1, SEQ_LEN, dtype=torch.long))
    assert all(torch.isfinite(z).all() for z in all_pad)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_half_width_parameters_are_leading_slices_of_the_full_model(name):
    shape = (SEQ_LEN,) if name == "transformer4" else (3, 32, 32)
    full = build_model(name, shape, 10, vocab_size=VOCAB)
    half = build_model(name, shape, 10, vocab_size=VOCAB, width=0.5)
    full_shapes = {n: t.shape for n, t in full.state_dict().items()}
    half_shapes = {n: t.shape for n, t in half.state_dict().items()}
    assert half_shapes.keys() == full_shapes.keys()
    for n, s in half_shapes.items():
        assert len(s) == len(full_shapes[n]), n
        assert all(a <= b for a, b in zip(s, full_shapes[n], strict=True)), n
    assert [h.in_features for h in half.exits] == [(h.in_features + 1) // 2 for h in full.exits]
    half.load_state_dict(
        {n: t[tuple(slice(0, k) for k in half_shapes[n])] for n, t in full.state_dict().items()}
    )
    logits = half.eval()(make_input(shape, batch=2))
    assert all(z.shape == (2, 10) and torch.isfinite(z).all() for z in logits)


def test_transformer_width_keeps_head_size():
    attention = build_model("transformer4", (SEQ_LEN,), 3, vocab_size=VOCAB, width=0.5).stages[1].attention
    assert (attention.num_heads, attention.query.out_features) == (2, 64)


def test_seed_fixes_the_weights_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    a = build_model("conv3", (3, 32, 32), 10, seed=7)
    assert torch.equal(torch.rand(3), expected_draw)
    b = build_model("conv3", (3, 32, 32), 10, seed=7)
    c = build_model("conv3", (3, 32, 32), 10, seed=8)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a.exits[0].weight, c.exits[0].weight)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "vgg11", "input_shape": (3, 32, 32)}, "unknown model 'vgg11'; available models: conv3, "),
        ({"name": "conv3", "input_shape": (64,)}, "for token sequences of shape (L,) use one of"),
        ({"name": "transformer4", "input_shape": (3, 32, 32), "vocab_size": VOCAB}, "for images use one of"),
        ({"name": "transformer4", "input_shape": (64,)}, "needs the dataset's vocab_size"),
        ({"name": "resnet8", "input_shape": (3, 32, 32), "width": 0.0}, "width must be positive"),
        ({"name": "resnet8", "input_shape": (3, 32, 32), "num_classes": 1}, "num_classes must be at least 2"),
        ({"name": "resnet8", "input_shape": (3, 0, 32)}, "input_shape must hold positive sizes"),
    ],
)
def test_build_model_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build_model(**{"num_classes": 10, **kwargs})


def test_invalid_upto_and_overlong_sequence_raise():
    model = build_model("resnet8", (3, 8, 8), 4)
    x = make_input((3, 8, 8), batch=1)
    for upto in (0, 4):
        with pytest.raises(ValueError, match=f"upto must be between 1 and 3, got {upto}"):
            model(x, upto=upto)
    text = build_model("transformer4", (SEQ_LEN,), 4, vocab_size=VOCAB)
    with pytest.raises(ValueError, match=f"L ≤ {SEQ_LEN}, got shape \\(1, {SEQ_LEN + 1}\\)"):
        text(torch.ones(1, SEQ_LEN + 1, dtype=torch.long))


@pytest.mark.parametrize(("name", "input_shape"), [("conv3", (3, 16, 16)), ("transformer4", (SEQ_LEN,))])
def test_sgd_on_a_fixed_batch_reduces_the_summed_exit_loss(name, input_shape):
    model = build_model(name, input_shape, 4, vocab_size=VOCAB, seed=0)
    x = make_input(input_shape, batch=16)
    y = torch.arange(16) % 4
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    def summed_loss() -> torch.Tensor:
        return sum(F.cross_entropy(z, y) for z in model(x))

    initial = summed_loss().item()
    for _ in range(10):
        optimizer.zero_grad()
        summed_loss().backward()
        optimizer.step()
    assert summed_loss().item() < 0.5 * initial
