"""The one number check every setting uses (config/choices.is_number)."""

import math

import pytest

from parakit.config.choices import is_number
from parakit.config.run import RunConfig
from parakit.config.prices import Prices


@pytest.mark.parametrize("value", [True, False, math.nan, math.inf, -math.inf, "1", None])
def test_not_numbers(value):
    assert not is_number(value)


def test_bounds():
    assert is_number(0, low=0) and not is_number(0, above=0) and is_number(1e-9, above=0)
    assert not is_number(-1, low=0) and is_number(-1)


@pytest.mark.parametrize("make", [lambda: RunConfig(lr=math.nan), lambda: RunConfig(lr=True),
                                  lambda: RunConfig(bucket_mb=0), lambda: Prices(device_hour_usd=-1.0),
                                  lambda: Prices(kwh_usd=math.inf)])
def test_settings_use_it(make):
    with pytest.raises(ValueError, match="must be a"):
        make()
