"""CSV cells that a spreadsheet reads as text, never as a formula (pure functions)."""

import csv

# OWASP's rule against CSV (formula) injection
# (https://owasp.org/www-community/attacks/CSV_Injection): a cell that begins with "=", "+",
# "-", "@", a tab (0x09) or a carriage return (0x0D) is read by Excel, LibreOffice Calc and
# Google Sheets as a formula, so it gets a leading single quote, which they read as "this cell
# is text" and do not show. ASVS 5.0 requirement 1.2.10 adds the null character. Quoting
# (RFC 4180) is no defence: a spreadsheet unquotes the cell first and evaluates it anyway.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\0")
TEXT_MARKER = "'"


def spreadsheet_safe(value):
    """``value`` as a CSV cell: its text, with a leading quote if a spreadsheet would evaluate it.

    Every cell goes through here, figures included: an order id, a country or a name from the
    shop is input, and a number that never starts with a sign is left as it is.
    """
    text = "" if value is None else str(value)
    if text.startswith(FORMULA_TRIGGERS):
        return TEXT_MARKER + text
    return text


def spreadsheet_safe_row(values):
    """Each of ``values`` made :func:`spreadsheet_safe`, as a list for ``csv.writer``."""
    return [spreadsheet_safe(value) for value in values]


class SpreadsheetSafeWriter:
    """A ``csv.writer`` on ``out`` whose every row is made spreadsheet-safe as it is written.

    Every CSV the app writes goes through one of these, so that no new column can forget.
    """

    def __init__(self, out, **fmtparams):
        self._writer = csv.writer(out, **fmtparams)

    def writerow(self, values):
        return self._writer.writerow(spreadsheet_safe_row(values))

    def writerows(self, rows):
        for values in rows:
            self.writerow(values)
