"""Settings of the django-oscar test shop: oscar's apps on the test project's database and broker.

Run its tests in a session of their own: ``pytest --ds tests.oscar_shop.settings tests/oscar_shop``.
The run folder, database (``DATABASE_URL``), broker (``CELERY_BROKER_URL``) and delivery timings
come from ``tests.settings``, so worker processes and both CI passes treat the two sessions alike.
"""

from oscar.defaults import *  # noqa: F403 - oscar's own defaults, as its docs have it

from tests.settings import *  # noqa: F403 - the run folder, database, broker and Celery settings
from tests.settings import BASE_DIR, RUN_DIR, WITH_MAILERS
from tests.settings import TIKTOK_TRACKING as TEST_PROJECT_TRACKING

ROOT_URLCONF = "tests.oscar_shop.urls"
SITE_ID = 1
STATIC_URL = "/static/"
# Thumbnails are written here: the session's scratch folder, never the source tree.
MEDIA_ROOT = str(RUN_DIR / "media")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.sites",
    "django.contrib.flatpages",
    "oscar.config.Shop",
    "oscar.apps.analytics.apps.AnalyticsConfig",
    "oscar.apps.checkout.apps.CheckoutConfig",
    "oscar.apps.address.apps.AddressConfig",
    "oscar.apps.shipping.apps.ShippingConfig",
    "oscar.apps.catalogue.apps.CatalogueConfig",
    "oscar.apps.catalogue.reviews.apps.CatalogueReviewsConfig",
    "oscar.apps.communication.apps.CommunicationConfig",
    "oscar.apps.partner.apps.PartnerConfig",
    "oscar.apps.basket.apps.BasketConfig",
    "oscar.apps.payment.apps.PaymentConfig",
    "oscar.apps.offer.apps.OfferConfig",
    "oscar.apps.order.apps.OrderConfig",
    "oscar.apps.customer.apps.CustomerConfig",
    "oscar.apps.search.apps.SearchConfig",
    "oscar.apps.voucher.apps.VoucherConfig",
    "oscar.apps.wishlists.apps.WishlistsConfig",
    "oscar.apps.dashboard.apps.DashboardConfig",
    "oscar.apps.dashboard.reports.apps.ReportsDashboardConfig",
    "oscar.apps.dashboard.users.apps.UsersDashboardConfig",
    "oscar.apps.dashboard.orders.apps.OrdersDashboardConfig",
    "oscar.apps.dashboard.catalogue.apps.CatalogueDashboardConfig",
    "oscar.apps.dashboard.offers.apps.OffersDashboardConfig",
    "oscar.apps.dashboard.partners.apps.PartnersDashboardConfig",
    "oscar.apps.dashboard.pages.apps.PagesDashboardConfig",
    "oscar.apps.dashboard.ranges.apps.RangesDashboardConfig",
    "oscar.apps.dashboard.reviews.apps.ReviewsDashboardConfig",
    "oscar.apps.dashboard.vouchers.apps.VouchersDashboardConfig",
    "oscar.apps.dashboard.communications.apps.CommunicationsDashboardConfig",
    "oscar.apps.dashboard.shipping.apps.ShippingDashboardConfig",
    "widget_tweaks",
    "haystack",
    "treebeard",
    "sorl.thumbnail",
    "django_tables2",
    "django_celery_beat",
    "tiktok_tracking",
    # What the integration's guide tells a shop to add.
    "tiktok_tracking.integrations.oscar.TikTokOscarConfig",
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "oscar.apps.basket.middleware.BasketMiddleware",
    "django.contrib.flatpages.middleware.FlatpageFallbackMiddleware",
    "tiktok_tracking.middleware.TikTokTrackingMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # The shop's overrides of oscar's templates, found before oscar's own.
        "DIRS": [BASE_DIR / "tests" / "oscar_shop" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.debug",
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.template.context_processors.i18n",
                "django.contrib.messages.context_processors.messages",
                "oscar.apps.search.context_processors.search_form",
                "oscar.apps.checkout.context_processors.checkout",
                "oscar.apps.communication.notifications.context_processors.notifications",
                "oscar.core.context_processors.metadata",
            ]
        },
    }
]

AUTHENTICATION_BACKENDS = [
    "oscar.apps.customer.auth_backends.EmailBackend",
    "django.contrib.auth.backends.ModelBackend",
]

HAYSTACK_CONNECTIONS = {"default": {"ENGINE": "haystack.backends.simple_backend.SimpleEngine"}}
if not WITH_MAILERS:
    # From Django 6.1 tests.settings names a locmem mailer in MAILERS, beside which Django
    # refuses EMAIL_BACKEND.
    EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"

OSCAR_DEFAULT_CURRENCY = "USD"
OSCAR_ALLOW_ANON_CHECKOUT = True
# A shop that takes payment after the order is placed (bank transfer, invoice) moves its orders
# from "Pending" to "Paid"; the deferred-payment tests switch the integration to that rule.
OSCAR_INITIAL_ORDER_STATUS = "Pending"
OSCAR_INITIAL_LINE_STATUS = "Pending"
OSCAR_ORDER_STATUS_PIPELINE = {
    "Pending": ("Paid", "Cancelled"),
    "Paid": ("Shipped", "Cancelled"),
    "Shipped": (),
    "Cancelled": (),
}

TIKTOK_TRACKING = {
    **TEST_PROJECT_TRACKING,
    "ORDER_ADAPTER": "tiktok_tracking.integrations.oscar.OscarOrderAdapter",
    # The test project's resolver and paid-order report read its own shop's models.
    "COUNTRY_RESOLVER": None,
    "COUNTRY_HEADER": "HTTP_X_COUNTRY",
    "PAID_ORDERS": None,
}
