from __future__ import annotations

from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="Dashboard",
            fields=[
                (
                    "id",
                    models.AutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
            ],
            options={
                "verbose_name": "task dashboard",
                "verbose_name_plural": "task dashboard",
                "permissions": [
                    ("view_dashboard", "Can view the task dashboard"),
                    ("manage_tasks", "Can retry, cancel, purge and drain tasks"),
                ],
                "managed": False,
                "default_permissions": (),
            },
        ),
    ]
