"""Per-exit MACs: hand-counted tiny networks, caching, no side effects, fvcore against FlopCounterMode."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.measure.flops import CostTable, cross_check_flop_counter, exit_costs
from bench.models import MODELS, EarlyExitNet, build_model


class TinyMLP(EarlyExitNet):
    """Linear 10→20, then ReLU + Linear 20→20; heads 20→3. MACs: stages 200 and 400, heads 60 each."""

    def __init__(self) -> None:
        super().__init__()
        self.stages = nn.ModuleList([nn.Linear(10, 20), nn.Sequential(nn.ReLU(), nn.Linear(20, 20))])
        self.exits = nn.ModuleList([nn.Linear(20, 3), nn.Linear(20, 3)])

    def pool(self, h: torch.Tensor, k: int) -> torch.Tensor:
        return h


class TinyConvNet(EarlyExitNet):
    """Two conv-BN-ReLU stages on 1×6×6 images, global-average-pooled linear heads 4→2.

    MACs: conv 1→4 (3×3, 6×6 output) 1296; conv 4→4 (3×3, stride 2, 3×3 output) 1296; heads 8 each.
    """

    def __init__(self) -> None:
        super().__init__()
        self.stages = nn.ModuleList(
            [
                nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU()),
                nn.Sequential(nn.Conv2d(4, 4, 3, 2, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU()),
            ]
        )
        self.exits = nn.ModuleList([nn.Linear(4, 2), nn.Linear(4, 2)])

    def pool(self, h: torch.Tensor, k: int) -> torch.Tensor:
        return h.mean(dim=(2, 3))


class TwoHeadSelfAttention(nn.Module):
    """Parameter-free 2-head self-attention through ``F.scaled_dot_product_attention``."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        heads = h.unflatten(-1, (2, -1)).transpose(1, 2)
        return F.scaled_dot_product_attention(heads, heads, heads).transpose(1, 2).flatten(2)


class TinyAttentionNet(EarlyExitNet):
    """Tokens 5×8 → Linear 8→8 (320 MACs) → 2-head SDPA (2·5·5·(4+4) = 400 MACs); mean-pooled head 8→3."""

    def __init__(self) -> None:
        super().__init__()
        self.stages = nn.ModuleList([nn.Sequential(nn.Linear(8, 8), TwoHeadSelfAttention())])
        self.exits = nn.ModuleList([nn.Linear(8, 3)])

    def pool(self, h: torch.Tensor, k: int) -> torch.Tensor:
        return h.mean(dim=1)


def test_tiny_mlp_macs_and_params_by_hand():
    table = exit_costs(TinyMLP(), (10,))
    assert [e.exit for e in table.exits] == [1, 2]
    assert [e.macs for e in table.exits] == [200 + 60, 200 + 60 + 400 + 60]  # earlier head included
    assert table.static_macs == 200 + 400 + 60  # no intermediate head
    assert table.static_macs_by_depth == (260, 660)
    assert table.static_macs_upto(1) == 260
    assert [e.params for e in table.exits] == [220 + 63, 220 + 63 + 420 + 63]
    assert [e.share for e in table.exits] == pytest.approx([260 / 720, 1.0])
    assert cross_check_flop_counter(TinyMLP(), (10,)) == [260, 720]


def test_tiny_conv_macs_by_hand_and_uncounted_ops_are_listed():
    table = exit_costs(TinyConvNet(), (1, 6, 6))
    assert [e.macs for e in table.exits] == [1296 + 8, 1296 + 8 + 1296 + 8]
    assert table.static_macs == 1296 + 1296 + 8
    assert [e.params for e in table.exits] == [36 + 8 + 10, 36 + 8 + 10 + 144 + 8 + 10]
    assert table.unsupported_ops["aten::batch_norm"] == 2  # seen, not counted as MACs
    assert cross_check_flop_counter(TinyConvNet(), (1, 6, 6)) == [1304, 2608]


def test_attention_is_counted_by_both_counters():
    model = TinyAttentionNet()
    assert [e.macs for e in exit_costs(model, (5, 8)).exits] == [320 + 400 + 24]
    assert cross_check_flop_counter(model, (5, 8)) == [320 + 400 + 24]


def test_static_macs_upto_rejects_depths_outside_the_model():
    table = exit_costs(TinyMLP(), (10,))
    with pytest.raises(ValueError, match="between 1 and 2"):
        table.static_macs_upto(3)


def test_cache_returns_the_identical_table_for_the_same_architecture_and_shape():
    torch.manual_seed(0)
    first = exit_costs(TinyConvNet(), (1, 6, 6))
    assert exit_costs(TinyConvNet(), (1, 6, 6)) is first  # other weights, same architecture
    larger = exit_costs(TinyConvNet(), (1, 8, 8))
    assert larger is not first
    assert larger.exits[0].macs == 8 * 8 * 4 * 9 + 8


def test_cache_tells_widths_apart():
    full = exit_costs(build_model("conv3", (1, 28, 28), 10), (1, 28, 28))
    half = exit_costs(build_model("conv3", (1, 28, 28), 10, width=0.5), (1, 28, 28))
    assert half is not full
    assert half.exits[-1].macs < full.exits[-1].macs / 3


def test_callers_model_is_left_untouched():
    torch.manual_seed(0)
    model = TinyConvNet()
    model.train()
    model.exits[1].eval()  # a mixed state that must survive
    model(torch.randn(4, 1, 6, 6))  # non-trivial BN running statistics
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [m.training for m in model.modules()]

    exit_costs(model, (1, 6, 7))
    cross_check_flop_counter(model, (1, 6, 7))

    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [m.training for m in model.modules()] == flags


def test_counting_logs_and_warns_nothing(caplog, recwarn):
    with caplog.at_level(logging.DEBUG, logger="fvcore"):
        table = exit_costs(TinyConvNet(), (1, 9, 9))  # uncalled heads and uncounted ops, not yet cached
    assert table.unsupported_ops
    assert [r.getMessage() for r in caplog.records if r.name.startswith("fvcore")] == []
    assert [str(w.message) for w in recwarn] == []


def test_bad_input_shapes_are_reported_clearly():
    with pytest.raises(ValueError, match="positive sizes"):
        exit_costs(TinyMLP(), ())
    with pytest.raises(ValueError, match="could not trace"):
        exit_costs(TinyConvNet(), (6, 6))
    with pytest.raises(TypeError, match="EarlyExitNet"):
        exit_costs(nn.Linear(2, 2), (2,))


def test_markdown_lists_every_exit_and_the_static_model():
    lines = exit_costs(TinyMLP(), (10,)).to_markdown().splitlines()
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:4]]
    assert rows == [["1", "260", "283", "36.1%"], ["2", "720", "766", "100.0%"]]
    assert lines[-1] == "static model (backbone + last head): 660 MACs"


SMALL_IMAGE_MODELS = ("conv3", "resnet8", "resnet20")
MODEL_CASES = [(name, shape) for name in SMALL_IMAGE_MODELS for shape in ((3, 32, 32), (1, 28, 28))]
MODEL_CASES += [("resnet18", (3, 32, 32)), ("resnet18", (3, 64, 64)), ("transformer4", (64,))]


def test_every_model_is_covered():
    assert {name for name, _ in MODEL_CASES} == set(MODELS)


@pytest.mark.parametrize(("name", "input_shape"), MODEL_CASES)
def test_fvcore_agrees_with_flop_counter_mode(name, input_shape):
    model = build_model(name, input_shape, 10, vocab_size=1000, seed=0)
    table: CostTable = exit_costs(model, input_shape)
    fvcore_macs = [e.macs for e in table.exits]
    reference = cross_check_flop_counter(model, input_shape)
    assert fvcore_macs == pytest.approx(reference, rel=0.02)

    assert fvcore_macs == sorted(set(fvcore_macs))  # strictly increasing
    # The static model drops the intermediate heads' work but keeps the whole backbone.
    assert fvcore_macs[-2] < table.static_macs < fvcore_macs[-1]
    assert table.exits[-1].params == sum(p.numel() for p in model.parameters())
    assert table.exits[-1].share == 1.0
