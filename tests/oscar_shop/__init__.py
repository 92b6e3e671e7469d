"""A django-oscar shop with the TikTok integration, tested in a pytest session of its own."""
