"""Codes and names defined by TikTok and ISO, shared by the app and the sandbox (no Django here)."""

# Events API response codes (docs/troubleshooting.md, "TikTok's answers"): errors arrive as HTTP
# 200 with one of these.
CODE_OK = 0
# Some events accepted (unverified: RudderStack counts it as success).
CODE_PARTIAL_SUCCESS = 20001
CODE_NO_PERMISSION = 40001
CODE_INVALID_PARAMETER = 40002
CODE_TOO_MANY_REQUESTS = 40100
# Too many events in one request (unverified for the Events API: from the code list of TikTok's
# business API SDK). A smaller request may pass, as after an HTTP 413.
CODE_INVALID_BATCH_SIZE = 40061
# TikTok's own side (unverified: third-party write-ups): 50000 internal error, 50002 service
# unavailable, and the rest of the 5xxxx range with them.
CODE_INTERNAL_ERROR = 50000
CODE_SERVICE_UNAVAILABLE = 50002
SERVER_ERROR_CODES = range(50000, 60000)

# TikTok deduplicates repeats of one event_id for 48 h; retries must stop well before that,
# and a purchase sent again later is counted again.
DEDUP_WINDOW_HOURS = 48

STANDARD_EVENTS = frozenset(
    {
        "AddPaymentInfo",
        "AddToCart",
        "AddToWishlist",
        "ApplicationApproval",
        "CompleteRegistration",
        "Contact",
        "CustomizeProduct",
        "Download",
        "FindLocation",
        "InitiateCheckout",
        "Lead",
        "Purchase",
        "Schedule",
        "Search",
        "StartTrial",
        "SubmitApplication",
        "Subscribe",
        "ViewContent",
    }
)
# Still accepted by TikTok (renamed or deprecated, converted on its side).
LEGACY_EVENTS = frozenset({"CompletePayment", "SubmitForm", "PlaceAnOrder", "ClickButton"})
ALLOWED_EVENTS = STANDARD_EVENTS | LEGACY_EVENTS
# Since May 2025 TikTok calls the purchase "Purchase"; the old name still works.
PURCHASE_EVENT_NAMES = frozenset({"Purchase", "CompletePayment"})

# Events in one Events API request.
MAX_BATCH_SIZE = 1000

# Circulating ISO 4217 currencies. Fund codes (BOV, CHE, USN, ...), precious metals (XAU, ...),
# SDR and the testing/no-currency codes (XTS, XXX) are left out: no shop charges in them.
ISO_4217_CODES = frozenset(
    """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN
    BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD
    FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY
    KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP
    MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR
    RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT
    TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VED VES VND VUV WST XAF XCD XCG XOF XPF YER
    ZAR ZMW ZWG
    """.split()  # noqa: SIM905 (one code per line would run to 157 lines)
)

# ISO 3166-1 alpha-2: the 249 officially assigned codes.
ISO_3166_ALPHA2_CODES = frozenset(
    """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR
    BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ
    EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW
    GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY
    KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV
    MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY
    QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG
    TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM
    ZW
    """.split()  # noqa: SIM905 (a 249-item literal would run to 249 lines)
)
