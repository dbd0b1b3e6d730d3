"""Searchset paging that follows `next` links verbatim, with guards against leaks and loops."""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterator
from typing import Any
from urllib.parse import urljoin

from fhir_cyclo.client.http import Params, Transport, origin, origin_str
from fhir_cyclo.core.errors import FatalTransportError, Issue, NotFound, OperationOutcome

log = logging.getLogger("fhir_cyclo.client")

# no-cache makes HAPI skip its 60 s search-result cache (read-after-write); no-store would
# also disable the paging cursor, so only one page would come back.
SEARCH_HEADERS = {"Cache-Control": "no-cache"}
_EXPIRED = (
    "the server no longer has this search (paging links expire, about 1 h on HAPI); "
    "re-run the search"
)


def resolve_link(base_url: str, link: str) -> str:
    """Absolute URL of a next link; relative links resolve against the base, not the page."""
    if link.startswith("?"):
        # HAPI-style `?_getpages=...` belongs to the base itself (urljoin would drop the path's
        # last segment when the base has no trailing slash).
        return base_url + link
    return urljoin(base_url + "/", link)


def next_link(bundle: dict[str, Any]) -> str | None:
    for link in bundle.get("link") or []:
        if isinstance(link, dict) and link.get("relation") == "next" and link.get("url"):
            return str(link["url"])
    return None


def _check_searchset(body: Any, url: str) -> dict[str, Any]:
    outcome = OperationOutcome.from_json(body)
    if outcome is not None:
        raise FatalTransportError(
            f"GET {url} answered an OperationOutcome instead of a searchset Bundle: "
            f"{outcome.message or 'no diagnostics'}",
            url=url,
        )
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        kind = body.get("resourceType") if isinstance(body, dict) else "a non-JSON body"
        raise FatalTransportError(
            f"GET {url} answered {kind} instead of a searchset Bundle", url=url
        )
    if body.get("type", "searchset") != "searchset":
        raise FatalTransportError(
            f"GET {url} answered a Bundle of type {body.get('type')!r}, expected searchset",
            url=url,
        )
    return body


def iter_pages(
    transport: Transport,
    base_url: str,
    first_url: str,
    params: Params | None,
    *,
    max_pages: int,
) -> Iterator[dict[str, Any]]:
    """Yield searchset Bundles page by page; never computes offsets and never needs `total`."""
    base_origin = origin(base_url)
    visited: set[str] = set()
    url, query = first_url, params
    pages = 0
    while True:
        try:
            response = transport.request("GET", url, params=query, headers=SEARCH_HEADERS)
        except NotFound as exc:
            if pages == 0 or exc.status != 410:
                raise
            # 410 on a paging link is HAPI-0417: the cursor expired; the outcome keeps its codes.
            outcome = OperationOutcome(
                issues=(
                    Issue(severity="error", code="not-found", diagnostics=_EXPIRED),
                    *exc.outcome.issues,
                ),
                raw=exc.outcome.raw,
            )
            raise NotFound(exc.status, outcome, url=exc.url, method=exc.method) from None
        visited.add(response.url)
        visited.add(url)
        bundle = _check_searchset(response.json(), response.url)
        pages += 1
        yield bundle

        link = next_link(bundle)
        if link is None:
            return
        target = resolve_link(base_url, link)
        if origin(target) != base_origin:
            # Following it would send the Authorization header to a server we were not told about.
            raise FatalTransportError(
                f"refusing to follow a next link to {origin_str(target)}: it is not the FHIR "
                f"server {origin_str(base_url)} (the credentials would go to another host); "
                f"link was {target}",
                url=target,
            )
        if target in visited:
            raise FatalTransportError(
                f"the server sent a next link that was already visited ({target}); "
                f"stopping to avoid an endless paging loop",
                url=target,
            )
        if pages >= max_pages:
            raise FatalTransportError(
                f"stopped after {pages} pages (max_pages={max_pages}) with more results left; "
                f"narrow the search or raise max_pages",
                url=target,
            )
        url, query = target, None


def iter_resources(
    bundles: Iterator[dict[str, Any]], *, modes: Collection[str] = ("match",)
) -> Iterator[dict[str, Any]]:
    """Resources of the pages whose `search.mode` is in `modes` (entries without a mode count)."""
    for bundle in bundles:
        for entry in bundle.get("entry") or []:
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if not isinstance(resource, dict):
                continue
            mode = (entry.get("search") or {}).get("mode")
            if mode is None or mode in modes:
                yield resource
            elif mode == "outcome":
                outcome = OperationOutcome.from_json(resource)
                if outcome is not None and outcome.message:
                    log.warning("search outcome: %s", outcome.message)
