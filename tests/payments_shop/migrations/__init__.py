"""Migrations of the django-payments test shop."""
