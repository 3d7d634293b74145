"""Signed payloads (the ``sign_payloads`` option): anyone who can write to Redis could otherwise
queue any registered task with any arguments.

At enqueue, the task's id, path and arguments are signed with Django's ``Signer`` (HMAC-SHA256,
keyed by ``SECRET_KEY``, salted for this use); the signature is stored with the task. Before a
worker resolves a stored path (which imports a module) or runs anything, it checks the
signature against ``SECRET_KEY`` and each of ``SECRET_KEY_FALLBACKS``, so keys rotate as Django's
do: sign with the new key, keep the old one in the fallbacks until every task signed with it
has run. A task whose signature is missing or wrong is never run: it fails with
``InvalidSignature`` and its id goes to the dead-letter set, for an operator to look at.
"""

from __future__ import annotations

import functools
import json

from django.conf import settings
from django.core.signing import BadSignature, Signer

from .exceptions import InvalidSignature
from .serialization import dumps

SALT = "redis_tasks.payload"


def _signed_text(task_id: str, path: str, args_json: str, kwargs_json: str, previous: bool) -> str:
    # Neither ids, paths nor JSON text hold a raw newline: the parts cannot run together. A
    # chain step that takes the previous step's value signs that too, so the mark cannot be
    # added to (or taken from) a stored task to slip a first argument in.
    parts = (task_id, path, args_json, kwargs_json, *(("previous",) if previous else ()))
    return "\n".join(parts)


def _signer() -> Signer:
    """A signer with the keys as the settings have them now (they may rotate)."""
    return _signer_for(settings.SECRET_KEY, tuple(settings.SECRET_KEY_FALLBACKS))


@functools.lru_cache(maxsize=8)
def _signer_for(key: str, fallbacks: tuple[str, ...]) -> Signer:
    return Signer(key=key, fallback_keys=list(fallbacks), salt=SALT, algorithm="sha256")


def sign(task_id: str, path: str, args_json: str, kwargs_json: str, previous: bool = False) -> str:
    """The signature of a task's call; ``previous``: a workflow step whose first argument the
    previous step's value will be (it is signed without it, as it is not known yet)."""
    return _signer().signature(_signed_text(task_id, path, args_json, kwargs_json, previous))


def verify(task_id: str, fields: dict[bytes, bytes]) -> None:
    """Raise InvalidSignature unless the stored task carries a signature of its own id, path
    and arguments by SECRET_KEY or one of SECRET_KEY_FALLBACKS."""
    signature = fields.get(b"sig")
    if not signature:
        raise InvalidSignature(
            f"task {task_id!r} carries no signature, and its backend runs only signed tasks "
            "(sign_payloads); it was not queued by this project's enqueue"
        )
    try:
        path, args, kwargs = (fields[k].decode() for k in (b"path", b"args", b"kwargs"))
        previous = bool(fields.get(b"wf_prev"))
        if previous:  # its first argument came from the step before it
            args = dumps(json.loads(args)[1:])
        text = _signed_text(task_id, path, args, kwargs, previous)
        _signer().unsign(f"{text}:{signature.decode()}")
    except (KeyError, ValueError, TypeError, BadSignature) as exc:
        raise InvalidSignature(
            f"task {task_id!r} has a signature that its id, path and arguments do not match "
            "under SECRET_KEY or SECRET_KEY_FALLBACKS (forged, altered, or signed with a key "
            "no longer configured)"
        ) from exc
