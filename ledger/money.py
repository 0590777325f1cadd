"""Money: an integer count of a currency's minor unit, never a float.

Amounts of commands are > 0 and at most ``MAX_AMOUNT_MINOR``; every currency is an ISO 4217 code.
"""

from __future__ import annotations

import re

from ledger.errors import InvalidInput

MAX_AMOUNT_MINOR = 10**12

# ISO 4217 active codes (2024 list), funds codes and precious metals excluded.
ISO_4217 = frozenset(
    """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP
    BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP
    GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR
    KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK
    MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR
    SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS
    UAH UGX USD UYU UZS VED VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG
    """.split()
)

# Digits of the minor unit where it is not 2 (ISO 4217): JPY counts yen, BHD counts fils.
MINOR_UNIT_DIGITS = {
    **dict.fromkeys("BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX VND VUV XAF XOF XPF".split(), 0),
    **dict.fromkeys("BHD IQD JOD KWD LYD OMR TND".split(), 3),
}

_CURRENCY = re.compile(r"[A-Z]{3}")


def currency(code: str) -> str:
    """The ISO 4217 code, or InvalidInput."""
    if not _CURRENCY.fullmatch(code) or code not in ISO_4217:
        raise InvalidInput(f"{code!r} is not an ISO 4217 currency code", field="currency")
    return code


def amount(value: int, *, field: str = "amount") -> int:
    """A command's amount in minor units: an int in 1..MAX_AMOUNT_MINOR, or InvalidInput."""
    # bool is an int in Python; an amount of True is a client bug, not one cent.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput("an amount is an integer count of minor units", field=field)
    if not 0 < value <= MAX_AMOUNT_MINOR:
        raise InvalidInput(f"an amount is between 1 and {MAX_AMOUNT_MINOR}", field=field)
    return value


def decimal_text(amount_minor: int, currency_code: str) -> str:
    """An amount of minor units as exact decimal text in the major unit (``-1234`` USD →
    ``-12.34``), computed with integers only."""
    digits = MINOR_UNIT_DIGITS.get(currency_code, 2)
    sign = "-" if amount_minor < 0 else ""
    whole, fraction = divmod(abs(amount_minor), 10**digits)
    return f"{sign}{whole}.{fraction:0{digits}d}" if digits else f"{sign}{whole}"
