"""Template tags: µs per render of the pixel and purchase tags against a static include."""

import argparse
import atexit
import os
import shutil
import statistics
import sys
import tempfile
import timeit
from datetime import datetime, timezone
from decimal import Decimal

from bench.common import setup_django

TARGET_US = 50
REPEATS = 5
DEFAULT_LOOPS = 2000
ORDER_NUMBER = "BENCH-1001"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m bench.tags",
        description="Time {% tiktok_pixel %} and {% tiktok_purchase order %} renders.",
    )
    parser.add_argument(
        "--loops",
        type=int,
        default=DEFAULT_LOOPS,
        help=f"renders per repeat (default {DEFAULT_LOOPS}; {REPEATS} repeats)",
    )
    args = parser.parse_args(argv)
    if args.loops < 1:
        parser.error("--loops must be at least 1")
    return args


def make_order():
    from tests.shop.models import Order, OrderLine

    order = Order.objects.create(
        number=ORDER_NUMBER,
        email="Buyer@Example.com",
        phone="+1 202 555 0143",
        country="US",
        currency="USD",
        total=Decimal("89.99"),
        customer_id="C-42",
    )
    OrderLine.objects.create(order=order, sku="SKU-123", name="Mug", quantity=1, price=order.total)
    return order


def make_request():
    """A GET as the middleware leaves it: US country cookie, visitor computed once."""
    from django.test import RequestFactory

    from tiktok_tracking.visitor import get_visitor

    request = RequestFactory().get(f"/thanks/{ORDER_NUMBER}/")
    request.COOKIES["country"] = "US"
    get_visitor(request)
    return request


def make_engine(static_dir):
    """An engine like the project's: app templates, the tag library, and ``static_dir``."""
    from django.template import Engine

    return Engine(
        dirs=[static_dir],
        app_dirs=True,
        libraries={"tiktok_tracking": "tiktok_tracking.templatetags.tiktok_tracking"},
    )


def measure(template, context, loops):
    """Best and median µs per render over REPEATS repeats of ``loops`` renders."""
    timer = timeit.Timer(lambda: template.render(context))
    runs = [seconds / loops * 1e6 for seconds in timer.repeat(REPEATS, loops)]
    return min(runs), statistics.median(runs)


def main(argv=None):
    args = parse_args(argv)
    run_dir = tempfile.mkdtemp(prefix="tiktok-bench-tags-")
    atexit.register(shutil.rmtree, run_dir, ignore_errors=True)
    setup_django(f"sqlite:///{os.path.join(run_dir, 'bench-tags.sqlite3')}", run_dir)
    import django
    from django.template import Context

    from tests.shop.models import Order

    make_order()
    static_dir = os.path.join(run_dir, "static-templates")
    os.makedirs(static_dir)
    engine = make_engine(static_dir)
    request = make_request()
    # As the thank-you view loads it: the tag reads order.items, one query per render.
    plain_order = Order.objects.get(number=ORDER_NUMBER)
    # As a view that prefetches the lines would pass it: no query in the tag.
    prefetched_order = Order.objects.prefetch_related("items").get(number=ORDER_NUMBER)
    cases = [
        ("tiktok_pixel", "{% tiktok_pixel %}", plain_order),
        ("tiktok_purchase order", "{% tiktok_purchase order %}", plain_order),
        ("  (lines prefetched)", "{% tiktok_purchase order %}", prefetched_order),
    ]

    results = []
    for index, (name, tag, order) in enumerate(cases):
        context = Context({"request": request, "order": order})
        tagged = engine.from_string("{% load tiktok_tracking %}" + tag)
        html = tagged.render(context)
        if html.lstrip().startswith("<!--"):
            sys.exit(f"{name} rendered a comment, not the pixel: {html.strip()}")
        # The baseline: the same bytes from a file, through the same engine and cached loader.
        static_name = f"bench_static_{index}.html"
        with open(os.path.join(static_dir, static_name), "w", encoding="utf-8") as handle:
            handle.write(html)
        static = engine.from_string(f'{{% include "{static_name}" %}}')
        if static.render(context) != html:
            sys.exit(f"the static include of {name} does not render the same bytes")
        tag_best, tag_median = measure(tagged, context, args.loops)
        base_best, base_median = measure(static, context, args.loops)
        results.append((name, len(html), tag_best, tag_median, base_best, base_median))

    print()
    print("Template tags")
    print(f"  date      {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"  versions  Django {django.get_version()}; Python {sys.version.split()[0]}")
    print(f"  method    {REPEATS} repeats x {args.loops} renders, µs per render (best, median)")
    print("  baseline  {% include %} of a file holding the same rendered HTML")
    print(f"  target    <= {TARGET_US} µs per render (median)")
    print()
    header = (
        f"{'tag':<24} {'bytes':>6} {'best µs':>8} {'median µs':>9} "
        f"{'base best':>9} {'base med':>9} {'ratio':>6}  target"
    )
    print(header)
    print("-" * len(header))
    misses = []
    for name, size, tag_best, tag_median, base_best, base_median in results:
        verdict = "ok" if tag_median <= TARGET_US else f"MISS (> {TARGET_US} µs)"
        if tag_median > TARGET_US:
            misses.append(name.strip())
        print(
            f"{name:<24} {size:>6} {tag_best:>8.1f} {tag_median:>9.1f} "
            f"{base_best:>9.1f} {base_median:>9.1f} {tag_median / base_median:>5.1f}x  {verdict}"
        )
    print()
    if misses:
        print(f"TARGET MISSED: {', '.join(misses)}")
    else:
        print(f"All tags within target (<= {TARGET_US} µs per render).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
