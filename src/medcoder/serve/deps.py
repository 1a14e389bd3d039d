"""What the routes are given through ``Depends``: the service's state, the loaded system, the coder of the request,
the audit store; and the check, run on every operation, that refuses a query parameter it does not take.

Each reads the app it serves (``request.app.state.medcoder``, a :class:`ServiceState`), so one module of
routes serves any number of apps.
"""

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPBearer

from medcoder.serve.audit import AuditStore
from medcoder.serve.auth import User
from medcoder.serve.errors import error
from medcoder.serve.state import ServiceState

# The operations that need a coder declare this scheme only in an app that uses tokens (``create_app`` adds it
# when it includes their routers): a dependency's signature, which the schema is built from, is fixed when its
# module is imported, while whether an app uses tokens is known only when it is created.
BEARER = HTTPBearer(auto_error=False, description="A per-coder token (`medcoder token add`).")


def service_state(request: Request) -> ServiceState:
    """The state of the app this request came to."""
    return request.app.state.medcoder


Service = Annotated[ServiceState, Depends(service_state)]


def ready_state(state: Service) -> ServiceState:
    """The state once the system is loaded: 503 while it loads or when it could not be."""
    if not state.ready.is_set():
        raise error(503, "the model is still loading", {"Retry-After": "5"})
    if state.coder is None:
        raise error(503, f"the model could not be loaded: {state.error}")
    return state


Ready = Annotated[ServiceState, Depends(ready_state)]


async def current_user(request: Request, state: Service) -> User:
    """The coder of the request: the owner of its bearer token, or the local user when the service uses none."""
    if state.tokens is None:
        return state.local_user
    credentials = await BEARER(request)
    if credentials is None:
        raise error(401, "missing token: send 'Authorization: Bearer <token>'", {"WWW-Authenticate": "Bearer"})
    user = state.tokens.user(credentials.credentials)
    if user is None:
        raise error(401, "unknown token", {"WWW-Authenticate": "Bearer"})
    return user


CurrentUser = Annotated[User, Depends(current_user)]


def audit_store(state: Service) -> AuditStore:
    """The decisions database (open from start-up to shutdown)."""
    assert state.audit is not None
    return state.audit


Audit = Annotated[AuditStore, Depends(audit_store)]


def known_query(request: Request) -> None:
    """A query parameter the operation does not take is an error that names it (a typo is not ignored)."""
    route = request.scope.get("route")
    if route is None or not hasattr(route, "dependant") or not request.query_params:
        return
    allowed = _query_names(route.dependant)
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        expected = ", ".join(sorted(allowed)) or "none"
        raise error(422, f"unknown query parameter {unknown[0]!r} (this operation takes: {expected})")


def _query_names(dependant: Any) -> set[str]:
    """The query parameters an operation takes, its dependencies' included."""
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names
