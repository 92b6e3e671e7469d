"""A shop paying with django-payments, for the integration tests."""
