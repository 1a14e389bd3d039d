"""The coder's workbench: a REST service and a web page over any saved system.

``create_app(model_dir, settings)`` builds the FastAPI app (``medcoder serve``
runs it with uvicorn): ``POST /v1/code`` codes notes with evidence spans,
``GET /v1/codes/search`` searches the catalog, ``POST /v1/decisions`` keeps
every accept / reject / add in the audit database, ``GET /`` is the web page.
"""

from medcoder.serve.settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]


def __getattr__(name: str):  # FastAPI is imported only when an app is built
    if name == "create_app":
        from medcoder.serve.app import create_app

        return create_app
    raise AttributeError(name)
