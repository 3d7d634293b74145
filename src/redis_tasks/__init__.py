"""django-redis-tasks: a Redis backend and worker for Django's background tasks."""

__version__ = "0.1.0"
