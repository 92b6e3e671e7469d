"""``manage.py seed_demo``: the demo's products and an ``admin`` user with a stable password."""

import os
import secrets
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from demo_shop.store.models import Product

PRODUCTS = [
    ("TEE-PINK", "Neon pink tee", "Soft cotton, loud colour.", "24.90", "#fe2c55"),
    ("MUG-TEAL", "Teal mug", "Holds 350 ml of anything.", "12.50", "#25c4be"),
    ("CAP-BLACK", "Black cap", "One size, adjustable strap.", "19.00", "#1d1d1f"),
    ("HOOD-SUN", "Sunrise hoodie", "Warm, with a kangaroo pocket.", "59.00", "#ff9f0a"),
]
ADMIN_USERNAME = "admin"
# The admin's password, made on the first run and kept in the demo's data folder, so that every
# run of the demo prints the same, working one.
PASSWORD_FILE = "admin-password"  # noqa: S105 - a file name, not a password


def admin_password():
    """The demo admin's password: the kept one, or a new one, kept (readable by its owner)."""
    path = settings.VAR_DIR / PASSWORD_FILE
    if path.exists() and path.read_text().strip():
        return path.read_text().strip()
    password = secrets.token_urlsafe(12)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(password + "\n")
    return password


class Command(BaseCommand):
    help = "Create the demo products and the admin user; prints the admin password."

    def handle(self, *args, **options):
        for sku, name, description, price, colour in PRODUCTS:
            Product.objects.update_or_create(
                sku=sku,
                defaults={
                    "name": name,
                    "description": description,
                    "price": Decimal(price),
                    "currency": Product.Currency.EUR,
                    "colour": colour,
                },
            )
        user, created = get_user_model().objects.get_or_create(
            username=ADMIN_USERNAME,
            defaults={"email": "admin@example.com", "is_staff": True, "is_superuser": True},
        )
        # Set every run: the printed password works even if someone changed it in the admin.
        password = admin_password()
        user.set_password(password)
        user.is_staff = user.is_superuser = user.is_active = True
        user.save()
        self.stdout.write(f"{len(PRODUCTS)} products ready.")
        self.stdout.write(
            f"Admin user{' created' if created else ''}: username {ADMIN_USERNAME} "
            f"password {password}"
        )
