"""The example project: a GraphQL-over-WebSocket server you can run in one command."""
