"""The suite's private server comes from the package's own test helper."""

from redis_tasks.testing import RedisServer, free_port, server_binary

__all__ = ["RedisServer", "free_port", "server_binary"]
