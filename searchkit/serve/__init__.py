"""``searchkit serve``: an HTTP search API over one index, a search page, Prometheus metrics, hot index reload.

Needs the ``serve`` extra (``pip install 'searchkit[serve]'``: FastAPI, uvicorn, prometheus-client); importing this
package does not load them. Modules: ``engine`` (the served index generation and its searchers, the swap),
``batcher`` (grouping concurrent queries into one call, in lanes), ``service`` (what each route does), ``schemas``
(request and response bodies, strictly typed), ``guard`` (token, the body's type, size and deadline, request
metrics), ``protocol`` (the headers' size and deadline, in uvicorn's connection), ``metrics``, ``app`` (FastAPI
wiring, the page's static files), ``settings`` (the names the processes share), ``runner`` (uvicorn).

>>> from searchkit.config import ServeConfig
>>> ServeConfig().host   # loopback unless told otherwise
'127.0.0.1'
"""
