"""A placeholder schema until the chat example lands: a greeting and a clock."""

from __future__ import annotations

import datetime
from typing import Any

import graphene

import gqlws


class Query(graphene.ObjectType):
    hello = graphene.String(name=graphene.String(default_value="world"))
    now = graphene.DateTime()

    @staticmethod
    def resolve_hello(root: Any, info: Any, name: str) -> str:
        return f"Hello, {name}!"

    @staticmethod
    def resolve_now(root: Any, info: Any) -> datetime.datetime:
        return datetime.datetime.now(datetime.timezone.utc)


schema = graphene.Schema(query=Query)


class ExampleGraphqlWsConsumer(gqlws.GraphqlWsConsumer):
    """Serves the example schema at /graphql/."""

    schema = schema
    send_keepalive_every = 30
