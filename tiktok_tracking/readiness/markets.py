"""Markets: the countries a shop's ad rules treat as one, from the READINESS["MARKETS"] setting."""

UNKNOWN_MARKET = "unknown"


def market_index(markets):
    """``{country: market}`` from ``{market: [countries]}``; a country in two is an error."""
    index = {}
    for market, countries in markets.items():
        if not market or not isinstance(market, str):
            raise ValueError(f"READINESS['MARKETS']: a market needs a name, got {market!r}")
        for country in countries:
            code = str(country).strip().upper()
            if len(code) != 2 or not code.isalpha():
                raise ValueError(
                    f"READINESS['MARKETS'][{market!r}]: {country!r} is not a two-letter "
                    "country code"
                )
            if index.get(code, market) != market:
                raise ValueError(
                    f"READINESS['MARKETS']: {code} is in both {index[code]!r} and {market!r}"
                )
            index[code] = market
    return index


def market_of(country, index):
    """The market of ``country``: its group's name, else the country itself, else "unknown"."""
    code = (country or "").strip().upper()
    # The unknown market's own name comes back as itself: figures read per country are
    # grouped into markets again later.
    if not code or code == UNKNOWN_MARKET.upper():
        return UNKNOWN_MARKET
    return index.get(code, code)
