"""Models for tests that need more than ``django.contrib.auth`` offers (serializer tests)."""
