from dataclasses import fields, is_dataclass

import pytest

from flame_core.strategies import STRATEGIES, build_strategy
from flame_core.strategies.cram import CramOptions
from flame_core.strategies.ewc import EwcOptions
from flame_core.strategies.expand import ExpandOptions
from flame_core.strategies.flame import FlameOptions, FlameStrategy
from flame_core.strategies.lora import LoraOptions
from flame_core.strategies.pas import PasOptions

DEFAULTS = {
    "flame": FlameOptions(rank="auto", energy=0.99, rank_budget=None, refit_epochs=3),
    "lora": LoraOptions(rank=32, rank_budget=None),
    "ewc": EwcOptions(lam=300.0, gamma=1.0),
    "expand": ExpandOptions(n_new=2),
    "pas": PasOptions(rank=32, beta=4.0, lam=10.0, c_b=0.1, top_p=0.3),
    "cram": CramOptions(
        tau_alloc=0.08, tau_novel=0.99, r_min=4, r_max=10, sigma=0.25, lam_dec=1.0, refit_epochs=3
    ),
}


@pytest.mark.parametrize("name", STRATEGIES)
def test_unknown_option_raises_naming_it_and_the_valid_ones(name: str) -> None:
    valid = [f.name for f in fields(build_strategy(name).options)]
    with pytest.raises(ValueError, match="bogus") as err:
        build_strategy(name, bogus=1)
    assert name in str(err.value)
    for option in valid:
        assert repr(option) in str(err.value)


def test_a_misspelt_option_is_refused_not_ignored() -> None:
    with pytest.raises(ValueError, match=r"'energi'.*'energy'"):
        build_strategy("flame", energi=0.5)


@pytest.mark.parametrize("name", STRATEGIES)
def test_options_are_a_defaulted_dataclass(name: str) -> None:
    options = build_strategy(name).options
    assert is_dataclass(options)
    assert options == DEFAULTS.get(name, options)
    if name == "finetune":
        assert fields(options) == ()


def test_options_are_typed_and_keywords_build_the_same_dataclass() -> None:
    strategy = build_strategy("pas", rank="8", lam=2)
    assert strategy.options.rank == 8 and isinstance(strategy.options.rank, int)
    assert strategy.options.lam == 2.0 and isinstance(strategy.options.lam, float)
    given = FlameOptions(rank=4, energy=0.9, refit_epochs=1)
    assert FlameStrategy(given).options is given
    assert build_strategy("flame", rank=4, energy=0.9, refit_epochs=1).options == given
    with pytest.raises(ValueError, match="not both"):
        FlameStrategy(given, rank=2)
    with pytest.raises(ValueError, match="FlameOptions"):
        FlameStrategy(LoraOptions())  # type: ignore[arg-type]


def test_bad_values_raise_naming_the_option() -> None:
    with pytest.raises(ValueError, match="n_new"):
        build_strategy("expand", n_new=0)
    with pytest.raises(ValueError, match="rank"):
        build_strategy("lora", rank=0)
    with pytest.raises(ValueError, match="r_min"):
        build_strategy("cram", r_min=5, r_max=4)


def test_unknown_strategy() -> None:
    with pytest.raises(ValueError, match="nope"):
        build_strategy("nope")
