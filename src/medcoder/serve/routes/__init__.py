"""The service's operations, one ``APIRouter`` per resource: ``service`` (health, readiness, the page), ``coding``
(code notes, search the catalog), ``audit`` (the coders' decisions), ``model`` (the served system)."""
