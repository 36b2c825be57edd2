"""Logging in to the dashboard with an admin key, and who is looking at each page.

The key is checked by `proxy.auth` exactly as on `/admin` (a tenant admin or
a global admin; an agent key is refused) and then kept in an HttpOnly,
SameSite=Strict cookie scoped to `/ui`, never in a URL. It is checked again
on every request, so a revoked key stops working here as it does on the REST
routes. The cookie also holds a random nonce drawn at login: the CSRF token of
every form is an HMAC of that nonce under the key, so it is per session and
only the logged-in browser can produce it. The login form itself is guarded
by a double-submit token (a cookie and a hidden field that must match).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Depends, Request, Response

from proxy.auth import Principal
from proxy.deps import get_state
from proxy.errors import AuthenticationFailed, PermissionDenied
from proxy.ui.web import UiRoute, page, read_form, redirect
from store.browse import tenant_names

COOKIE = "molt_ui"
LOGIN_COOKIE = "molt_ui_login"
PATH = "/ui"


@dataclass(frozen=True, slots=True)
class UiUser:
    """The logged-in admin and the tenant the page is about."""

    principal: Principal
    csrf: str
    tenant: str  # the tenant this page acts on (the caller's own unless `?tenant=`)
    asked: str | None  # the `?tenant=` given, if any
    tenants: list[str]  # what the tenant picker offers (a tenant admin: its own only)

    @property
    def is_global(self) -> bool:
        return self.principal.is_global

    def link(self, path: str, **params: object) -> str:
        """A dashboard URL that keeps the `?tenant=` this page was asked for."""
        query = {"tenant": self.asked, **params}
        kept = {k: str(v) for k, v in query.items() if v is not None and v != ""}
        return path + ("?" + urlencode(kept) if kept else "")


def _pack(nonce: str, key: str) -> str:
    return nonce + "." + base64.urlsafe_b64encode(key.encode("utf-8")).decode("ascii")


def _unpack(value: str) -> tuple[str, str] | None:
    nonce, sep, packed = value.partition(".")
    if not sep or not nonce:
        return None
    try:
        return nonce, base64.urlsafe_b64decode(packed.encode("ascii")).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError):
        return None


def csrf_token(nonce: str, key: str) -> str:
    return hmac.new(key.encode("utf-8"), b"molt-ui-csrf:" + nonce.encode("ascii"),
                    hashlib.sha256).hexdigest()


def _headers(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"} if key else {}


async def current_user(request: Request, tenant: str | None = None) -> UiUser:
    """The dependency of every page: a valid admin login, allowed to act on `?tenant=`."""
    raw = request.cookies.get(COOKIE)
    found = _unpack(raw) if raw else None
    if found is None:
        raise AuthenticationFailed("not logged in")
    nonce, key = found
    state = get_state(request)
    principal = await state.auth.require_admin(_headers(key))
    tenant = tenant or None
    scoped = principal.scope(tenant)  # a tenant admin naming another tenant: 403
    tenants = await tenant_names(state.db) if principal.is_global else [principal.tenant]
    return UiUser(principal, csrf_token(nonce, key), scoped, tenant, tenants)


User = Annotated[UiUser, Depends(current_user)]


def _same_origin(request: Request) -> bool:
    """A browser's Origin (when it sends one) must be this server."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", "")


async def checked_form(request: Request, user: UiUser) -> dict[str, str]:
    """The posted form, once its CSRF token and origin are this session's."""
    form = await read_form(request)
    if not _same_origin(request) or not hmac.compare_digest(form.get("csrf", ""), user.csrf):
        raise PermissionDenied("the form's CSRF token does not match this session; reload the "
                               "page and try again", code="csrf_failed")
    return form


router = APIRouter(prefix=PATH, route_class=UiRoute, include_in_schema=False)


def _login_page(request: Request, error: str | None = None, status: int = 200) -> Response:
    token = secrets.token_urlsafe(24)
    resp = page(request, "login.jinja", {"csrf": token, "error": error, "user": None},
                status=status)
    resp.set_cookie(LOGIN_COOKIE, token, path=PATH, httponly=True, samesite="strict",
                    secure=request.url.scheme == "https")
    return resp


@router.get("")
async def home(request: Request) -> Response:
    """The login page, or the sessions when already logged in."""
    try:
        await current_user(request)
    except (AuthenticationFailed, PermissionDenied):
        return _login_page(request)
    return redirect(f"{PATH}/sessions")


@router.get("/login")
async def login_form(request: Request) -> Response:
    return _login_page(request)


@router.post("/login")
async def login(request: Request) -> Response:
    form = await read_form(request)
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not _same_origin(request) or not hmac.compare_digest(
        form.get("csrf", ""), expected
    ):
        return _login_page(request, "The login form expired; please try again.", 403)
    key = form.get("key", "").strip()
    try:
        await get_state(request).auth.require_admin(_headers(key))
    except AuthenticationFailed:
        return _login_page(request, "That key is not valid (unknown or revoked).", 401)
    except PermissionDenied:
        return _login_page(request, "That key is not an admin key; the dashboard needs a "
                                    "tenant admin or a global admin key.", 403)
    resp = redirect(f"{PATH}/sessions")
    resp.set_cookie(COOKIE, _pack(secrets.token_urlsafe(24), key), path=PATH, httponly=True,
                    samesite="strict", secure=request.url.scheme == "https")
    resp.delete_cookie(LOGIN_COOKIE, path=PATH)
    return resp


@router.post("/logout")
async def logout(request: Request, user: User) -> Response:
    await checked_form(request, user)
    resp = redirect(f"{PATH}/login")
    resp.delete_cookie(COOKIE, path=PATH, httponly=True, samesite="strict")
    return resp
