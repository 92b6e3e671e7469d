"""A plain-text progress bar for long management commands, drawn on one line of stderr."""

from django.core.management.base import OutputWrapper

BAR_WIDTH = 30


def progress_line(done, total, *, label="", width=BAR_WIDTH):
    """``label [#####.....] done/total (pct%)`` for ``done`` of ``total`` items (pure)."""
    total = max(total, 0)
    done = min(max(done, 0), total) if total else done
    fraction = done / total if total else 1.0
    filled = int(width * fraction)
    bar = "#" * filled + "." * (width - filled)
    prefix = f"{label} " if label else ""
    return f"{prefix}[{bar}] {done}/{total} ({int(fraction * 100)}%)"


class ProgressBar:
    """Redraws :func:`progress_line` in place on ``stream``; does nothing when not ``enabled``."""

    def __init__(self, stream, total, *, label="", enabled=True):
        self.stream = stream
        self.total = total
        self.label = label
        self.enabled = enabled
        self._last = None

    def update(self, done):
        if not self.enabled:
            return
        line = progress_line(done, self.total, label=self.label)
        if line != self._last:
            # A carriage return redraws the same line; no terminal library needed.
            self._write(f"\r{line}")
            self._last = line

    def finish(self):
        if self.enabled and self._last is not None:
            self._write("\n")

    def _write(self, text):
        if isinstance(self.stream, OutputWrapper):
            # Django's wrapper would colour every stderr write as an error and add a newline.
            self.stream.write(text, style_func=str, ending="")
        else:
            self.stream.write(text)
        self.stream.flush()
