"""Money shown with two decimals, more only where two would round a real amount to $0.00."""

from decimal import Decimal

import pytest

from keys.templatetags.money import usd


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (Decimal("5.269057"), "$5.27"),
        (Decimal("500"), "$500.00"),
        (Decimal("1500.5"), "$1,500.50"),
        (Decimal("0"), "$0.00"),
        (Decimal("0.0012"), "$0.0012"),
        (Decimal("0.004999"), "$0.004999"),
        (Decimal("0.005"), "$0.01"),
        (None, ""),
    ],
)
def test_usd(value, shown):
    assert usd(value) == shown
