"""Test models: multi-table inheritance, a proxy, and one field of each kind."""

from __future__ import annotations

import uuid

from django.db import models


class Place(models.Model):
    name = models.CharField(max_length=50)
    address = models.CharField(max_length=80, blank=True)


class Restaurant(Place):
    """Multi-table inheritance: ``name`` and ``address`` live in the parent's table."""

    serves_pizza = models.BooleanField(default=False)
    owner = models.ForeignKey("auth.User", null=True, on_delete=models.SET_NULL)


class Pizzeria(Restaurant):
    """A proxy: the same table as ``Restaurant``, another class."""

    class Meta:
        proxy = True


class Specimen(models.Model):
    """One field of each kind whose value a payload might carry."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    price = models.DecimalField(max_digits=10, decimal_places=2)
    duration = models.DurationField()
    day = models.DateField()
    at = models.TimeField()
    when = models.DateTimeField()
    data = models.JSONField(default=dict)
    blob = models.BinaryField(default=b"")
    attachment = models.FileField(blank=True)
    ratio = models.FloatField(null=True)
