"""The only module that imports Django's task framework.

Django 6.0+ ships it as ``django.tasks``; Django 5.2 needs the ``django-tasks`` backport
(``django_tasks``). Everything else in this package imports the framework from here, so the
two spellings (``InvalidTask`` vs ``InvalidTaskError``) are decided once.
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured

try:
    from django.tasks import (  # type: ignore[import-not-found,unused-ignore]
        DEFAULT_TASK_QUEUE_NAME,
        Task,
        TaskContext,
        TaskResult,
        TaskResultStatus,
        task,
        task_backends,
    )
    from django.tasks.backends.base import (  # type: ignore[import-not-found,unused-ignore]
        BaseTaskBackend,
    )
    from django.tasks.base import (  # type: ignore[import-not-found,unused-ignore]
        TASK_MAX_PRIORITY,
        TASK_MIN_PRIORITY,
        TaskError,
    )
    from django.tasks.exceptions import (  # type: ignore[import-not-found,unused-ignore]
        InvalidTask,
        TaskResultDoesNotExist,
    )
    from django.tasks.signals import (  # type: ignore[import-not-found,unused-ignore]
        task_enqueued,
        task_finished,
        task_started,
    )
    from django.utils.json import (  # type: ignore[import-not-found,attr-defined,unused-ignore]
        normalize_json,
    )

    FRAMEWORK = "django.tasks"
except ImportError:
    try:
        from django_tasks import (  # type: ignore[import-not-found,no-redef,unused-ignore]
            DEFAULT_TASK_QUEUE_NAME,
            TaskContext,
            TaskResult,
            TaskResultStatus,
            task,
            task_backends,
        )
        from django_tasks.backends.base import (  # type: ignore[import-not-found,no-redef,unused-ignore]
            BaseTaskBackend,
        )
        from django_tasks.base import (  # type: ignore[import-not-found,no-redef,unused-ignore]
            TASK_MAX_PRIORITY,
            TASK_MIN_PRIORITY,
            Task,
            TaskError,
        )
        from django_tasks.exceptions import (  # type: ignore[import-not-found,no-redef,unused-ignore]
            InvalidTaskError as InvalidTask,
        )
        from django_tasks.exceptions import (  # type: ignore[import-not-found,no-redef,unused-ignore]
            TaskResultDoesNotExist,
        )
        from django_tasks.signals import (  # type: ignore[import-not-found,no-redef,unused-ignore]
            task_enqueued,
            task_finished,
            task_started,
        )
        from django_tasks.utils import (  # type: ignore[import-not-found,no-redef,unused-ignore]
            normalize_json,
        )

        FRAMEWORK = "django_tasks"
    except ImportError as exc:
        import django

        raise ImproperlyConfigured(
            f"redis_tasks needs Django's task framework: Django {django.get_version()} has no "
            "django.tasks, and the django-tasks backport is not installed. Install it with "
            "`pip install 'django-redis-tasks[backport]'` (and add 'django_tasks' to "
            "INSTALLED_APPS), or upgrade to Django 6.0 or newer."
        ) from exc

__all__ = [
    "DEFAULT_TASK_QUEUE_NAME",
    "FRAMEWORK",
    "TASK_MAX_PRIORITY",
    "TASK_MIN_PRIORITY",
    "BaseTaskBackend",
    "InvalidTask",
    "Task",
    "TaskContext",
    "TaskError",
    "TaskResult",
    "TaskResultDoesNotExist",
    "TaskResultStatus",
    "normalize_json",
    "task",
    "task_backends",
    "task_enqueued",
    "task_finished",
    "task_started",
]
