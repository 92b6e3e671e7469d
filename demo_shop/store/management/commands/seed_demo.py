"""``manage.py seed_demo``: the demo's products and an ``admin`` user with a fresh password."""

import secrets
from decimal import Decimal

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
        # A new password each run: stored passwords are hashed, so this is the only way to
        # print a working one.
        password = secrets.token_urlsafe(12)
        user.set_password(password)
        user.is_staff = user.is_superuser = user.is_active = True
        user.save()
        self.stdout.write(f"{len(PRODUCTS)} products ready.")
        self.stdout.write(
            f"Admin user {'created' if created else 'password reset'}: "
            f"username {ADMIN_USERNAME} password {password}"
        )
