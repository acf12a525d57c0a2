"""The portal's web application (Starlette + Jinja2): public pages, downloads, error pages, the auditors' view.

:func:`create_app` builds the public site (``auditor=False``: every figure through disclosure control, no
auditor route at all) or the auditors' site (``auditor=True``: the same pages unsuppressed, plus the
staffing plan; served only on the mutual-TLS listener, see :mod:`portal.cli`). Pages are rendered on the
server; charts are inline SVG; CSS is one local file; nothing is fetched from anywhere else.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from biometrics.events import ARRIVAL, DIRECTIONS, EventStore
from portal import charts, opendata, validation
from portal.disclosure import NationalityRelease
from portal.figures import Figures, PortalConfig
from portal.i18n import LANGUAGES, Translator
from portal.periods import add_months, month_start
from portal.released import TableReleases, utc_now
from portal.releases import ReleaseLog
from portal.table_log import TableLog
from portal.validation import BadParameter

log = logging.getLogger(__name__)

STATION_NAMES = {
    "rokot-airport": "Rokot (Sipora)",
    "tuapejat-port": "Tuapejat (Sipora)",
    "siberut-port": "Siberut (Maileppet)",
    "sikakap-port": "Sikakap (Pagai Utara)",
}
AUDITOR_ROLE = "auditor"


class StoreUnavailable(Exception):
    """The event store cannot be opened or does not answer (a 503 page)."""


def _store_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [sqlite3.Error, OSError, StoreUnavailable]
    try:
        import psycopg
        import psycopg_pool

        errors += [psycopg.Error, psycopg_pool.PoolTimeout]
    except ImportError:  # pragma: no cover - psycopg is a dependency
        pass
    try:
        from biometrics.event_store import NoEventTables, StoreSchemaMismatch

        errors += [NoEventTables, StoreSchemaMismatch]
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


STORE_ERRORS = _store_errors()


class StoreHolder:
    """Opens the store on first use and again after it failed, so that the portal starts without it.

    The releases outlive a reopened store (they are kept here, not in the figures): a store that comes back
    does not make the portal draw new noise for a month it has released, nor protect a released day again.
    With ``config.state_dir`` they are also written there and read back, so that a restart does neither
    (:class:`~portal.releases.StateDirError` at once when the directory cannot be written).
    """

    def __init__(self, opener: Callable[[], EventStore], config: PortalConfig,
                 clock: Callable[[], datetime] = utc_now):
        self._opener, self._config = opener, config
        self._figures: Figures | None = None
        self._lock = threading.Lock()
        log = ReleaseLog(config.state_dir) if config.state_dir is not None else None
        self.release = NationalityRelease(config.release, log)
        self.tables = TableReleases(config.schedule, TableLog(config.state_dir) if config.state_dir else None, clock)

    def figures(self) -> Figures:
        """The figures over the open store; :class:`StoreUnavailable` when it cannot be opened."""
        with self._lock:
            if self._figures is None:
                try:
                    self._figures = Figures(self._opener(), self._config, self.release, self.tables)
                except STORE_ERRORS as exc:
                    raise StoreUnavailable(str(exc)) from exc
            return self._figures

    def reset(self) -> None:
        """Forget a store that failed: the next request opens it again."""
        with self._lock:
            figures, self._figures = self._figures, None
        close = getattr(figures.store, "close", None) if figures else None
        if close:
            with contextlib.suppress(*STORE_ERRORS):
                close()


def station_name(station: str | None, t: Translator) -> str:
    """A station's display name (all stations when None)."""
    if station is None:
        return t("all_stations")
    return STATION_NAMES.get(station, station)


def fmt_ms(value: float | None, t: Translator) -> str:
    """A processing time in ms as published (en dash when not published, ``>30000`` in the open bucket)."""
    if value is None:
        return "\u2013"
    if math.isinf(value):
        return ">30" + ("." if t.lang == "id" else ",") + "000"
    return t.number(value)


class Portal:
    """The request handlers of one site (public or auditors')."""

    def __init__(self, holder: StoreHolder, config: PortalConfig, auditor: bool):
        self.holder, self.config, self.auditor = holder, config, auditor
        self.public = not auditor
        self.env = Environment(loader=PackageLoader("portal", "templates"), autoescape=select_autoescape(["html"]),
                               trim_blocks=True, lstrip_blocks=True)
        self.env.globals["inf"] = math.inf

    # -- rendering -------------------------------------------------------------------------------------

    def page(self, request: Request, template: str, lang: str, status: int = 200, **context: Any) -> HTMLResponse:
        """Render ``template`` with what every page shows: language switch, navigation, last update."""
        t = Translator(lang)
        other = "en" if lang == "id" else "id"
        last = context.pop("last_update", None)
        html = self.env.get_template(template).render(
            t=t, lang=lang, other_lang=other, other_url=self._relative(request.url.include_query_params(lang=other)),
            path=request.url.path, auditor=self.auditor, banner=self.config.banner, tz=self.config.tz_name,
            last_update=self._local_text(last, t) if last else None, station_name=lambda s: station_name(s, t),
            fmt_ms=lambda v: fmt_ms(v, t), nav=self._nav(), **context)
        headers = {"Content-Language": lang,
                   "Cache-Control": "no-store" if self.auditor or status >= 400 else "max-age=60"}
        return HTMLResponse(html, status_code=status, headers=headers)

    @staticmethod
    def _relative(url: Any) -> str:
        """A link to ``url`` on this site without scheme and host (the page works under any address).

        The path is re-encoded (a backslash, which browsers read as a slash, becomes ``%5C``) and starts with
        exactly one slash: a request for ``//evil.example/masuk`` must not make a protocol-relative link to
        another host.
        """
        path = "/" + quote(url.path, safe="/").lstrip("/")
        return f"{path}?{url.query}" if url.query else path

    def _nav(self) -> list[tuple[str, str]]:
        items = [("/", "nav_home"), ("/today", "nav_today"), ("/arrivals", "nav_arrivals"),
                 ("/seasonal", "nav_seasonal"), ("/satisfaction", "nav_satisfaction"), ("/data", "nav_data"),
                 ("/method", "nav_method")]
        if self.auditor:
            items.insert(6, ("/staffing", "nav_staffing"))
        return items

    def _local_text(self, when: datetime, t: Translator) -> str:
        local = self.config.local(when)
        return f"{local.day} {t.month_name(local.month)} {local.year}, {local:%H:%M} {self.config.tz_name}"

    def _params(self, request: Request, allowed: tuple[str, ...]) -> tuple[dict[str, str], str]:
        params = dict(request.query_params)
        lang = validation.language(params)
        validation.check_known(params, ("lang", *allowed))
        return params, lang

    def _context(self) -> tuple[Figures, datetime | None, date]:
        """The figures, the store's last update and today (local: the wall clock's for the public site, the
        last update's for the auditors)."""
        figures = self.holder.figures()
        last = self._last_update(figures)
        return figures, last, figures.current_day(last) if self.auditor else figures.today_local()

    def _last_update(self, figures: Figures) -> datetime | None:
        """When the figures this site shows last changed: the store's last update for the auditors; on the
        public site the release of the last released day (its end plus the grace period), a whole number of
        days, never the moment of a traveller's decision, nor whether the store has any (an empty store's first
        decision changes nothing either). The store is read on both sites, on every request: one that does not
        answer, or is at another schema version, is a 503 page even where the page's figures are kept in memory."""
        last = figures.last_update()
        return last if self.auditor else figures.last_release_time()

    def _day(self, params: dict[str, str], figures: Figures, today: date) -> date:
        """The ``date`` parameter: a released day on the public site (default: the last one), any day up to
        tomorrow for the auditors (default: today)."""
        if self.public:
            last = figures.last_released_day()
            return validation.day(params, "date", last, last)
        return validation.day(params, "date", today, today + timedelta(days=1))

    # -- pages -------------------------------------------------------------------------------------------

    def home(self, request: Request) -> Response:
        """The overview: every checkpoint today, and the pages."""
        _params, lang = self._params(request, ())
        figures, last, today = self._context()
        day = figures.last_released_day() if self.public else today
        return self.page(request, "home.html", lang, last_update=last, day=day,
                         overview=figures.overview(day, self.public))

    def today(self, request: Request) -> Response:
        """Hour by hour at one checkpoint on one day."""
        params, lang = self._params(request, ("station", "date"))
        figures, last, today = self._context()
        stations = figures.stations(self.public)
        station = validation.station(params, stations, required=True)
        day = self._day(params, figures, today)
        t = Translator(lang)
        view = figures.today(station, day, self.public) if station else None
        counts_chart = times_chart = None
        if view:
            hours = [f"{h:02d}" for h in range(24)]
            counts_chart = charts.bar_chart(
                "chart-counts", t("today_counts_caption", station=station_name(station, t), day=day.isoformat()),
                t("today_counts_chart"), hours, [(t("decisions"), [c.total.public for c in view.hours])],
                t("decisions"))
            times_chart = charts.line_chart(
                "chart-times", t("today_times_caption", station=station_name(station, t), day=day.isoformat()),
                t("today_times_chart"), hours,
                [(t(f"p{q}"), [c.percentiles[q] for c in view.hours]) for q in (50, 90, 95)], t("ms"))
        return self.page(request, "today.html", lang, last_update=last, stations=stations, station=station,
                         day=day, view=view, counts_chart=counts_chart, times_chart=times_chart,
                         target=self.config.service_target_ms)

    def _period(self, params: dict[str, str], figures: Figures, today: date) -> tuple[date, date]:
        """``from`` and ``to``: at most 36 months up to this month (default: the 12 months up to the last one
        published whole; for the auditors, up to this month)."""
        default = figures.last_released_month() if self.public else month_start(today)
        last = validation.month(params, "to", default, today)
        first = validation.month(params, "from", add_months(last, -11), today)
        validation.month_span(first, last)
        return first, last

    def _monthly(self, request: Request) -> tuple[str, Any, Any, list[str], str | None, date, date]:
        """The parameters of a page over months of one or every station: its language, the figures, the last
        update, the stations, the station asked for and the first and last months."""
        params, lang = self._params(request, ("station", "from", "to"))
        figures, last, today = self._context()
        stations = figures.stations(self.public)
        station = validation.station(params, stations)
        first, last_month = self._period(params, figures, today)
        return lang, figures, last, stations, station, first, last_month

    def arrivals(self, request: Request) -> Response:
        """Arrivals per month by port and by nationality."""
        lang, figures, last, stations, station, first, last_month = self._monthly(request)
        t = Translator(lang)
        view = figures.arrivals(station, first, last_month, self.public)
        months = _month_labels(t, view.months)
        port_chart = charts.line_chart(
            "chart-ports", t("arrivals_port_caption"), t("arrivals_port_chart"), months,
            [(station_name(s, t), [None if m in view.pending or (i, j) in view.unpublished else row[j].public
                                   for i, (m, row) in enumerate(zip(view.months, view.by_port.cells, strict=True))])
             for j, s in enumerate(view.stations)],
            t("arrivals"))
        top = view.nationalities[:12]
        short = self.method_text(t, short=True)
        nat_chart = charts.bar_chart(
            "chart-nationalities", t("arrivals_nat_caption", station=station_name(station, t), method=short),
            t("arrivals_nat_chart"), top, [(t("arrivals"), view.nat_totals[:12])], t("arrivals"))
        return self.page(request, "arrivals.html", lang, last_update=last, stations=stations, station=station,
                         view=view, first=first, last_month=last_month, port_chart=port_chart, nat_chart=nat_chart,
                         method=self.method_text(t), method_short=short)

    def seasonal(self, request: Request) -> Response:
        """Arrivals per month, one line per year."""
        params, lang = self._params(request, ("station", "years"))
        figures, last, _today = self._context()
        stations = figures.stations(self.public)
        station = validation.station(params, stations)
        years = validation.integer(params, "years", 3, 1, 10)
        t = Translator(lang)
        view = figures.seasonal(station, years, self.public)
        months = [t.month_name(m, short=True) for m in range(1, 13)]
        chart = charts.line_chart(
            "chart-seasonal", t("seasonal_caption", station=station_name(station, t)), t("seasonal_chart"), months,
            [(str(y), [None if (y, m + 1) in view.future else c.public for m, c in enumerate(view.table.cells[i])])
             for i, y in enumerate(view.years)], t("arrivals"))
        return self.page(request, "seasonal.html", lang, last_update=last, stations=stations, station=station,
                         view=view, chart=chart, years=years)

    def satisfaction(self, request: Request) -> Response:
        """Ratings per month and the share positive."""
        lang, figures, last, stations, station, first, last_month = self._monthly(request)
        t = Translator(lang)
        view = figures.satisfaction(station, first, last_month, self.public)
        months = _month_labels(t, view.months)
        chart = charts.line_chart(
            "chart-satisfaction", t("satisfaction_caption", station=station_name(station, t)),
            t("satisfaction_chart"), months,
            [(t("share_positive") + " (%)", [None if r is None or r.share_positive is None else 100 * r.share_positive
                                             for r in view.rows])],
            "%", decimals=1)
        return self.page(request, "satisfaction.html", lang, last_update=last, stations=stations, station=station,
                         view=view, chart=chart, first=first, last_month=last_month)

    def method(self, request: Request) -> Response:
        """The disclosure method and its parameters."""
        _params, lang = self._params(request, ())
        figures, last, _today = self._context()
        t = Translator(lang)
        from biometrics.event_store import BPS_PORTS_SOURCE

        return self.page(request, "method.html", lang, last_update=last, method=self.method_text(t),
                         ports=self._ports(figures),
                         ports_source=BPS_PORTS_SOURCE, retention=self.config.retention_days)

    def _ports(self, figures: Figures) -> dict[str, str]:
        """The BPS port code of each station the site names (public: the released stations only)."""
        codes = figures.store.port_codes() if hasattr(figures.store, "port_codes") else {}
        named = set(figures.stations(self.public))
        return {s: code for s, code in codes.items() if s in named}

    def method_text(self, t: Translator, short: bool = False) -> str:
        """The nationality release method and its parameters, in words (``short``: for a caption)."""
        policy = self.config.release
        if self.auditor:
            return t("method_auditor")
        if short:
            return t(f"method_short_{policy.method}", epsilon=t.number(policy.epsilon, 2), base=policy.base)
        release = self.holder.release
        if policy.method == "opendp":
            text = t("method_opendp", epsilon=t.number(policy.epsilon, 2), delta=f"{policy.delta:g}",
                     scale=t.number(policy.scale, 2), threshold=release.threshold())
        else:
            text = t("method_round5", base=policy.base)
        text += " " + t("method_kept")
        for params, months in release.kept_releases().items():
            if params.method == "opendp":
                how = t("method_params_opendp", epsilon=t.number(params.epsilon or 0, 2), delta=f"{params.delta:g}",
                        threshold=params.threshold)
            else:
                how = t("method_params_round5", method=params.method, base=params.base)
            text += " " + t("method_kept_other", months=", ".join(f"{m:%Y-%m}" for m in months), how=how)
        return text

    def staffing(self, request: Request) -> Response:
        """The Erlang C staffing plan (auditors only)."""
        params, lang = self._params(request, ("station", "date", "direction"))
        figures, last, today = self._context()
        stations = figures.stations(self.public)
        station = validation.station(params, stations, required=True)
        day = validation.day(params, "date", today, today + timedelta(days=1))
        direction = validation.choice(params, "direction", DIRECTIONS, ARRIVAL)
        t = Translator(lang)
        plans = figures.staffing(station, day, direction) if station else []
        chart = charts.bar_chart(
            "chart-staffing", t("staffing_caption"), t("staffing_chart"), [f"{h:02d}" for h in range(24)],
            [(t("lanes_needed"), [p.lanes_needed for p in plans]), (t("lanes_active"), [p.lanes_open for p in plans])],
            t("lanes_active"))
        return self.page(request, "staffing.html", lang, last_update=last, stations=stations, station=station,
                         day=day, direction=direction, plans=plans, chart=chart, directions=DIRECTIONS,
                         handling=self.config.handling_s, target_wait=self.config.target_wait_s)

    # -- open data ---------------------------------------------------------------------------------------

    def data_page(self, request: Request) -> Response:
        """The downloads and the data dictionary."""
        _params, lang = self._params(request, ())
        _figures, last, _today = self._context()
        return self.page(request, "data.html", lang, last_update=last, datasets=opendata.DATASETS)

    def dictionary(self, request: Request) -> Response:
        """The data dictionary as JSON (both languages)."""
        validation.check_known(dict(request.query_params), ())
        doc = {name: [{"name": f, "type": typ, **{lang: Translator(lang)(f"field_{f}") for lang in LANGUAGES}}
                      for f, typ in fields] for name, fields in opendata.DATASETS.items()}
        import json

        return Response(json.dumps(doc, ensure_ascii=False, indent=1), media_type="application/json",
                        headers=self._cache())

    def _cache(self) -> dict[str, str]:
        """The caching of a download: never stored on the auditors' site (unsuppressed figures)."""
        return {"Cache-Control": "no-store" if self.auditor else "max-age=60"}

    def download(self, request: Request) -> Response:
        """One dataset as CSV or JSON, with the same disclosure control as the pages."""
        dataset = request.path_params["dataset"]
        if dataset not in opendata.DATASETS:
            raise BadParameter("bad_dataset", value=dataset[:40])
        allowed = {"hourly": ("station", "date"), "arrivals_port": ("from", "to"),
                   "arrivals_nationality": ("station", "from", "to"), "seasonal": ("station", "years"),
                   "satisfaction": ("station", "from", "to")}[dataset]
        params, _lang = self._params(request, ("format", *allowed))
        fmt = validation.output_format(params)
        figures, last, today = self._context()
        stations = figures.stations(self.public)
        rows: list[list[Any]] = []
        if dataset == "hourly":
            station = validation.station(params, stations, required=True)
            day = self._day(params, figures, today)
            view = figures.today(station, day, self.public) if station else None
            if view:  # None: the day's release does not list the station (not published)
                rows = [[station, day, h.hour, h.counts[0], h.counts[1], h.total, h.percentiles[50],
                         h.percentiles[90], h.percentiles[95], h.lanes_open] for h in view.hours]
        elif dataset == "arrivals_port":
            first, last_month = self._period(params, figures, today)
            view = figures.arrivals(None, first, last_month, self.public)
            ports = self._ports(figures)
            rows = [[m.strftime("%Y-%m"), s, ports.get(s, ""), view.by_port.cells[i][j]]
                    for i, m in enumerate(view.months) for j, s in enumerate(view.stations)
                    if m not in view.pending and (i, j) not in view.unpublished]
        elif dataset == "arrivals_nationality":
            station = validation.station(params, stations)
            first, last_month = self._period(params, figures, today)
            view = figures.arrivals(station, first, last_month, self.public)
            methods = [self._released_with(figures, m) for m in view.nat_months]
            rows = [[m.strftime("%Y-%m"), station or "all", nat, view.by_nationality[i][j], methods[j]]
                    for j, m in enumerate(view.nat_months) for i, nat in enumerate(view.nationalities)
                    if view.by_nationality[i][j] is not None]
        elif dataset == "seasonal":
            station = validation.station(params, stations)
            years = validation.integer(params, "years", 3, 1, 10)
            view = figures.seasonal(station, years, self.public)
            rows = [[y, m + 1, station or "all", c] for i, y in enumerate(view.years)
                    for m, c in enumerate(view.table.cells[i]) if (y, m + 1) not in view.future]
        else:
            station = validation.station(params, stations)
            first, last_month = self._period(params, figures, today)
            view = figures.satisfaction(station, first, last_month, self.public)
            rows = [[m.strftime("%Y-%m"), station or "all", *r.counts, r.total,
                     None if r.share_positive is None else round(r.share_positive, 4)]
                    for m, r in zip(view.months, view.rows, strict=True) if r is not None]
        recs = opendata.records(dataset, rows)
        name = f"{dataset}.{fmt}"
        headers = {"Content-Disposition": f'attachment; filename="{name}"', **self._cache()}
        if fmt == "csv":
            return Response(opendata.to_csv(dataset, recs), media_type="text/csv; charset=utf-8", headers=headers)
        meta = {"last_update": last.isoformat() if last else None, "disclosure": self.method_text(Translator("en")),
                "licence": "CC BY 4.0"}
        return Response(opendata.to_json(dataset, recs, meta), media_type="application/json", headers=headers)

    def _released_with(self, figures: Figures, month: date) -> str:
        """The method a month's nationality counts were published with (a kept release: its own method)."""
        if not self.public:
            return "unsuppressed"
        params = figures.release.released_with(month)
        return params.method if params else self.config.release.method

    # -- errors ------------------------------------------------------------------------------------------

    def error(self, request: Request, status: int, detail: str | None = None) -> HTMLResponse:
        """The error page for ``status`` in the request's language (never a stack trace)."""
        lang = validation.language_or_default(dict(request.query_params))
        last = None
        if status != 503:
            try:
                last = self._last_update(self.holder.figures())
            except STORE_ERRORS:
                status = 503
        return self.page(request, "error.html", lang, status=status, status_code=status, detail=detail,
                         last_update=last)


def create_app(store: EventStore | Callable[[], EventStore], config: PortalConfig | None = None,
               auditor: bool = False, clock: Callable[[], datetime] = utc_now) -> Starlette:
    """The public site (or, with ``auditor=True``, the auditors' site) over ``store`` (or a function opening it);
    ``clock`` (UTC) says which periods are released."""
    config = config or PortalConfig()
    opener = store if callable(store) and not hasattr(store, "hourly") else (lambda: store)
    holder = StoreHolder(opener, config, clock)  # type: ignore[arg-type]
    portal = Portal(holder, config, auditor)

    async def bad_parameter(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, BadParameter)
        lang = validation.language_or_default(dict(request.query_params))
        return portal.error(request, 400, Translator(lang)(exc.key, **exc.values))

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        return portal.error(request, status if status in (400, 403, 404, 405) else 500)

    async def store_down(request: Request, exc: Exception) -> Response:
        log.warning("portal: the event store is unavailable: %s", exc)
        holder.reset()
        return portal.error(request, 503)

    routes = [
        Route("/", portal.home), Route("/today", portal.today), Route("/arrivals", portal.arrivals),
        Route("/seasonal", portal.seasonal), Route("/satisfaction", portal.satisfaction),
        Route("/method", portal.method), Route("/data", portal.data_page),
        Route("/data/dictionary.json", portal.dictionary), Route("/data/{dataset}", portal.download),
        Mount("/static", StaticFiles(packages=[("portal", "static")]), name="static"),
    ]
    if auditor:
        routes.append(Route("/staffing", portal.staffing))
    handlers: dict[Any, Any] = {BadParameter: bad_parameter, HTTPException: http_error}
    for error in STORE_ERRORS:
        handlers[error] = store_down
    app = Starlette(routes=routes, exception_handlers=handlers)
    if auditor:
        app.add_middleware(AuditorOnly, portal=portal)
    app.add_middleware(ServerErrors, portal=portal)  # inside SecurityHeaders: the 500 page carries them too
    app.add_middleware(SecurityHeaders)
    app.state.portal = portal
    return app


#: Sent with every response: the browser itself refuses anything not from this site (no script at all).
SECURITY_HEADERS = (
    (b"content-security-policy", b"default-src 'none'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
                                 b"form-action 'self'; "
                                 b"base-uri 'none'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)


class PortalMiddleware:
    """An ASGI middleware of one site for its HTTP requests (:meth:`http`); anything else passes through."""

    def __init__(self, app: Any, portal: Portal):
        self.app, self.portal = app, portal

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.http(scope, receive, send)

    async def http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Handle one HTTP request."""
        raise NotImplementedError


class ServerErrors(PortalMiddleware):
    """ASGI middleware: an exception no handler took becomes the 500 page (and is logged).

    Starlette's own last-resort handler runs outside every middleware, so its page would lack the security
    headers; this one runs inside :class:`SecurityHeaders`. An exception after the response has started is
    raised on (nothing else can be sent).
    """

    async def http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Pass the request on; render the 500 page if it fails before answering."""
        started = False

        async def watched(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as exc:
            if started:
                raise
            request = Request(scope)
            log.exception("portal: %s %s failed", request.method, request.url.path, exc_info=exc)
            await self.portal.error(request, 500)(scope, receive, send)


class SecurityHeaders:
    """ASGI middleware adding :data:`SECURITY_HEADERS` to every HTTP response."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


#: The log line (INFO) that ends a warm-up, followed by its duration: what ``checkpoint-bench portal`` waits for.
WARM_UP_DONE = "portal: warm-up done in"


def warm_up(app: Starlette) -> None:
    """Fill what the first visitors would otherwise wait for: the solver's import, the releases of the days
    and months the default pages show (run in a thread at start; errors are only logged)."""
    portal: Portal = app.state.portal
    began = time.monotonic()
    try:
        figures = portal.holder.figures()
        last = figures.last_released_month()
        figures.seasonal(None, 3, portal.public)
        figures.arrivals(None, add_months(last, -11), last, portal.public)
        figures.satisfaction(None, add_months(last, -11), last, portal.public)
    except Exception as exc:  # the pages will say what is wrong; the warm-up only saves time
        log.warning("portal: warm-up skipped: %s", exc)
        return
    log.info("%s %.1f s", WARM_UP_DONE, time.monotonic() - began)


class AuditorOnly(PortalMiddleware):
    """ASGI middleware: admit only a client whose TLS certificate names the auditor role (else a 403 page).

    The certificate arrives in the ASGI TLS extension (``scope["extensions"]["tls"]["client_cert_chain"]``),
    which :mod:`portal.cli`'s TLS protocol fills in; the TLS layer has already verified it against the
    station's CA. The role comes from the SAN URI ``checkpoint-role:auditor`` as in :mod:`verify.roles`.
    """

    async def http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """The request, if its certificate names the auditor role; else the 403 page."""
        if role_of(scope) != AUDITOR_ROLE:
            response = self.portal.error(Request(scope), 403)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def role_of(scope: dict[str, Any]) -> str | None:
    """The role named by the client certificate of this connection, or None."""
    chain = (scope.get("extensions") or {}).get("tls", {}).get("client_cert_chain") or []
    if not chain:
        return None
    from verify.roles import NoRole, actor_from_pem

    try:
        return actor_from_pem(chain[0].encode() if isinstance(chain[0], str) else chain[0]).role
    except (NoRole, ValueError):
        return None


__all__ = ["WARM_UP_DONE", "PortalConfig", "create_app", "warm_up"]


def _month_labels(t: Translator, months: list[date]) -> list[str]:
    """Short month names with two-digit years (``Jan 26``), in the page's language."""
    return [f"{t.month_name(m.month, short=True)} {m.year % 100:02d}" for m in months]
