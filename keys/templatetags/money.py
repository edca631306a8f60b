"""Values as people read them: money as "$5.27" (two decimals; more only where two would show a real
amount as $0.00: "$0.0012"), and what a permission level allows."""

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from django import template

from keys.policy import COMPLETIONS_WORDS, MANAGE_WORDS

register = template.Library()
CENT = Decimal("0.01")


@register.filter
def usd(value) -> str:
    if value is None or value == "":
        return ""
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return str(value)
    rounded = amount.quantize(CENT, rounding=ROUND_HALF_UP)
    if rounded == 0 and amount != 0:  # e.g. 0.0012: show the digits that make it non-zero
        return f"${amount.normalize():f}"
    return f"${rounded:,.2f}"


@register.filter
def manage_words(level: str) -> str:
    """`write` as "write (can create, change and delete keys: an admin credential)"."""
    return f"{level} ({MANAGE_WORDS[level]})" if level in MANAGE_WORDS else level


@register.filter
def completions_words(level: str) -> str:
    return f"{level} ({COMPLETIONS_WORDS[level]})" if level in COMPLETIONS_WORDS else level
