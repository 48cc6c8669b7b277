"""The chat's one model: a message in a chatroom."""

from __future__ import annotations

from django.db import models


class Message(models.Model):
    chatroom = models.CharField(max_length=100, db_index=True)
    text = models.TextField()
    #: Who sent it, as shown: a username, or "Anonymous".
    sender = models.CharField(max_length=150)
    #: The sender's session: the identity of anonymous connections too.
    sender_session = models.CharField(max_length=40, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created", "id"]

    def __str__(self) -> str:
        return f"{self.sender}@{self.chatroom}: {self.text}"
