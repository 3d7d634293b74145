"""An optional Django-admin dashboard for redis_tasks: queues, tasks and workers, and actions.

Add ``"redis_tasks.dashboard"`` to ``INSTALLED_APPS`` (after ``django.contrib.admin``); the pages
appear in the admin under "Redis tasks". See docs/dashboard.md.
"""
