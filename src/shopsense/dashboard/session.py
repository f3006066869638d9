"""Dashboard sign-in: an API key exchanged for a server-side session behind an HttpOnly cookie.

Contract (pages rely on it):

- ``GET /signin`` shows the form; ``POST /signin`` (form fields ``key`` and ``next``) checks the key with the
  shop's :class:`~shopsense.services.keys.KeyRing` and, for a valid one, starts a session: a random id
  (``secrets.token_urlsafe``) in the cookie :data:`COOKIE` (HttpOnly, SameSite=Strict, ``Secure`` as
  ``dashboard.secure_cookie`` says: :func:`secure_cookie`; ``Max-Age`` = ``dashboard.session_hours``), then
  redirects (303) to ``next`` (a local path only; for the default ``/``, the first page the key may open).
- The server keeps the sessions (:class:`SessionBook`), keyed by the key id too: each request looks the
  key's record up again (:meth:`SessionBook.check`), so ``shopsense keys revoke`` ends every session of that
  key at its next request. The cookie holds only the session id; the book holds its hash, never the key.
- Each session has its own CSRF token (:attr:`Session.csrf`): every POST/PUT/DELETE of the dashboard must
  carry it, as the form field ``csrf`` or the header ``X-CSRF-Token``, else 403
  (:func:`shopsense.dashboard.deps.viewer` checks it; templates get it as ``csrf``).
- ``POST /signout`` (with the CSRF token) ends the session and clears the cookie.

Sessions live in the memory of one server process: with several replicas behind a load balancer, use
sticky sessions (or sign in on each); a restart signs everyone out.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Annotated
from urllib.parse import urlsplit

from anyio import to_thread
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from shopsense.errors import StoreError
from shopsense.services.keys import KeyRecord, KeyRing

COOKIE = "shopsense_session"
"""The session cookie's name."""
CSRF_FIELD = "csrf"
"""The form field carrying the CSRF token."""
CSRF_HEADER = "x-csrf-token"
"""The header carrying the CSRF token (for ``fetch`` calls)."""
MAX_SESSIONS = 10_000
"""Sessions kept at most; the oldest go first beyond it."""


@dataclass(frozen=True)
class Session:
    """One signed-in browser: whose key, its CSRF token, and when it ends (``time.time()`` seconds)."""

    key_id: str
    csrf: str
    expires_at: float


@dataclass
class SessionBook:
    """The server's sessions, by the hash of their id, and the ids of each key's sessions."""

    hours: float
    _sessions: dict[str, Session] = field(default_factory=dict)
    _by_key: dict[str, set[str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def seconds(self) -> int:
        return int(self.hours * 3600)

    def start(self, record: KeyRecord, now: float | None = None) -> tuple[str, Session]:
        """A new session for a verified key: its id (for the cookie only) and the session."""
        now = time.time() if now is None else now
        session_id = secrets.token_urlsafe(32)
        session = Session(record.key_id, secrets.token_urlsafe(32), now + self.seconds)
        with self._lock:
            if len(self._sessions) >= MAX_SESSIONS:
                oldest = min(self._sessions, key=lambda h: self._sessions[h].expires_at)
                self._drop(oldest)
            digest = _hash(session_id)
            self._sessions[digest] = session
            self._by_key.setdefault(record.key_id, set()).add(digest)
        return session_id, session

    def find(self, session_id: str | None, now: float | None = None) -> Session | None:
        """The live session of a cookie's id; None (and forgotten) once it expired."""
        if not session_id:
            return None
        now = time.time() if now is None else now
        digest = _hash(session_id)
        with self._lock:
            session = self._sessions.get(digest)
            if session is not None and session.expires_at <= now:
                self._drop(digest)
                return None
            return session

    def check(
        self, keys: KeyRing, session_id: str | None, now: float | None = None
    ) -> tuple[Session, KeyRecord] | None:
        """The session and its key's current record; None when either ended. A revoked or deleted key
        ends all of its sessions here (the record is read from the key storage on every call)."""
        session = self.find(session_id, now)
        if session is None:
            return None
        record = keys.storage.find(session.key_id)
        if record is None or record.revoked_at is not None:
            self.end_key(session.key_id)
            return None
        return session, record

    def end(self, session_id: str | None) -> None:
        """Sign one session out."""
        if session_id:
            with self._lock:
                self._drop(_hash(session_id))

    def end_key(self, key_id: str) -> int:
        """Sign out every session of a key; how many there were."""
        with self._lock:
            digests = self._by_key.pop(key_id, set())
            for digest in digests:
                self._sessions.pop(digest, None)
            return len(digests)

    def _drop(self, digest: str) -> None:
        session = self._sessions.pop(digest, None)
        if session is not None:
            owned = self._by_key.get(session.key_id)
            if owned is not None:
                owned.discard(digest)
                if not owned:
                    del self._by_key[session.key_id]


def csrf_matches(session: Session, presented: str | None) -> bool:
    """Whether a request's CSRF token is its session's (compared in constant time)."""
    return bool(presented) and hmac.compare_digest(session.csrf.encode(), (presented or "").encode())


def safe_next(target: str | None) -> str:
    """A redirect target after sign-in: a local path only (never another site), ``/`` otherwise."""
    if not target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


# -- routes ----------------------------------------------------------------------------------------

router = APIRouter(include_in_schema=False)


def book_of(request: Request) -> SessionBook:
    """The app's sessions (made by :func:`shopsense.dashboard.app.mount_dashboard`)."""
    book: SessionBook = request.app.state.dashboard_sessions
    return book


def keys_of(request: Request) -> KeyRing:
    from shopsense.api.deps import shop_of

    return shop_of(request).keys


async def current(request: Request) -> tuple[Session, KeyRecord] | None:
    """The request's session and key record, checked against the key storage (off the event loop when
    keys live in a database); None without a live session."""
    book, keys = book_of(request), keys_of(request)
    session_id = request.cookies.get(COOKIE)
    if not keys.blocking:
        return book.check(keys, session_id)
    try:
        return await to_thread.run_sync(book.check, keys, session_id)
    except StoreError:
        return None


@router.get("/signin", response_class=HTMLResponse)
async def signin_form(request: Request, next: str = "/") -> Response:
    """The sign-in form."""
    from shopsense.dashboard.deps import render

    return render(request, "signin.html", next=safe_next(next), error=None)


@router.post("/signin", response_class=HTMLResponse)
async def signin(
    request: Request, key: Annotated[str, Form(max_length=500)], next: Annotated[str, Form()] = "/"
) -> Response:
    """Exchange an API key for a session cookie."""
    from shopsense.dashboard.deps import render

    keys = keys_of(request)
    presented = key.strip()
    try:
        record = await to_thread.run_sync(keys.verify, presented) if keys.blocking else keys.verify(presented)
    except StoreError:
        record = None
    if record is None:
        return render(
            request, "signin.html", status_code=401, next=safe_next(next), error="That key is unknown or revoked."
        )
    book = book_of(request)
    session_id, _ = book.start(record)
    target = safe_next(next)
    if target == "/":  # the overview needs recommend:read: send a marketing-only key to a page it may open
        from shopsense.dashboard.deps import PAGES

        target = "/"
        for path, _, scope in PAGES:
            if record.allows(scope):
                target = path
                break
    redirect = RedirectResponse(target, status_code=303)
    redirect.set_cookie(
        COOKIE,
        session_id,
        max_age=book.seconds,
        path="/",
        httponly=True,
        samesite="strict",
        secure=secure_cookie(request),
    )
    return redirect


def secure_cookie(request: Request) -> bool:
    """Whether the session cookie gets ``Secure``: ``dashboard.secure_cookie`` = always, never, or auto (when
    this request came over https)."""
    setting = request.app.state.shop.settings.dashboard.secure_cookie
    return setting == "always" or (setting == "auto" and request.url.scheme == "https")


@router.post("/signout")
async def signout(request: Request) -> Response:
    """End the session (CSRF-checked like every dashboard POST) and clear the cookie."""
    from shopsense.dashboard.deps import checked_csrf

    found = await current(request)
    if found is not None:
        await checked_csrf(request, found[0])
        book_of(request).end(request.cookies.get(COOKIE))
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response
