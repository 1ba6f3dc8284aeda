"""The FastAPI application (port 8001): health, pipeline runs, run records, scheduler and reconcile.

Every route but ``/health`` authenticates, and nothing can turn that off. The client address used
for per-IP limits is the peer's, or on Cloud Run the ``X-Forwarded-For`` entry its front end
appended (``FORWARDED_TRUSTED_HOPS``, see :mod:`launcher.client_address`).
"""
from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from beam_pipelines.config.loader import discover_pipelines
from beam_pipelines.metastore import MetastoreSpec
from launcher.auth import FailedAuthLimiter, authenticate_scheduler, google_oidc_verifier, key_bucket
from launcher.backends import make_backend
from launcher.client_address import client_address
from launcher.logs import request_id
from launcher.middleware import RequestContext
from launcher.problems import ApiProblem
from launcher.ratelimits import FixedWindows, RateExceeded
from launcher.service import LaunchService, check_json
from launcher.settings import LauncherSettings
from launcher.workers import ServiceCalls

log = logging.getLogger(__name__)


def _api_key(request: Request) -> str | None:
    return request.headers.get("x-api-key")




def create_app(settings: LauncherSettings, backend=None, oidc_verifier=None) -> FastAPI:
    settings.check()
    backend = backend or make_backend(settings)
    pipelines = discover_pipelines(settings.core.configs_dir)
    service = LaunchService(settings, backend, pipelines, MetastoreSpec.from_settings(settings.core).open())
    calls = ServiceCalls(service.metastore, backend)
    verify_oidc = oidc_verifier or google_oidc_verifier()
    def address(request: Request) -> str:
        return client_address(request, settings.forwarded_trusted_hops)

    per_ip = FixedWindows(settings.rate_limit_per_ip)
    per_key = FixedWindows(settings.rate_limit_per_key)
    guard = FailedAuthLimiter(settings.auth_failures_per_ip)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        backend.start()
        calls.start()
        yield
        calls.stop()
        backend.stop()

    app = FastAPI(title="Convergence launcher", version="1", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.service = service
    app.state.backend = backend

    @app.exception_handler(ApiProblem)
    async def _problem(request: Request, exc: ApiProblem):
        return JSONResponse(exc.body(request_id.get()), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return JSONResponse({"error": "invalid_request", "message": f"{where}: {first['msg']}",
                             "request_id": request_id.get()}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "error")
        return JSONResponse({"error": code, "message": str(exc.detail), "request_id": request_id.get()},
                            status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error")
        return JSONResponse({"error": "internal", "message": "internal error", "request_id": request_id.get()},
                            status_code=500)

    def limited(request: Request, route: str, by_key: bool = True) -> None:
        """Count the request against its route's per-IP (and per-key) limits; 429 past either."""
        try:
            per_ip.hit((route, address(request)))
            if by_key:
                per_key.hit((route, key_bucket(_api_key(request))))
        except RateExceeded as exc:
            raise ApiProblem(429, "rate_limited", f"rate limit exceeded: {exc.rate}",
                             {"Retry-After": str(exc.retry_after)}) from None

    async def authenticated(request: Request, call, *args, store_only: bool = False):
        """Run ``call`` (which authenticates first); count its 401s against the client's IP."""
        ip = address(request)
        if guard.blocked(ip):
            raise ApiProblem(429, "too_many_failed_authentications", "too many failed authentications from this address",
                             {"Retry-After": str(guard.retry_after(ip))})
        try:
            return await calls(call, *args, store_only=store_only)
        except ApiProblem as exc:
            if exc.status == 401:
                guard.failed(ip)
            raise

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    async def _run(request: Request, org: str, segments: list[str]):
        body = await request.body()
        result = await authenticated(request, service.run_pipeline, _api_key(request), org, segments, body,
                                     request.headers.get("content-type", ""), store_only=True)
        return JSONResponse(result, status_code=202)

    # The hot routes read their segments from the request instead of declaring str parameters: FastAPI's
    # parameter machinery cost ~20 us a request, more than checks 2 and 4, which validate every segment.
    @app.post("/api/v1/pipelines/run/{org}/{provider}/{domain}/{pipeline}")
    async def run_pipeline(request: Request):
        limited(request, "run_pipeline")
        path = request.path_params
        return await _run(request, path["org"], [path["provider"], path["domain"], path["pipeline"]])

    @app.post("/api/v1/pipelines/run/{org}/{provider}/{pipeline}")
    async def run_pipeline_short(request: Request):
        limited(request, "run_pipeline_short")
        path = request.path_params
        return await _run(request, path["org"], [path["provider"], path["pipeline"]])

    @app.get("/api/v1/pipelines/runs/{run_id}")
    async def get_run(request: Request, run_id: str):
        limited(request, "get_run")
        return await authenticated(request, service.get_run, _api_key(request), run_id)

    @app.get("/api/v1/pipelines/runs")
    async def list_runs(request: Request, limit: int = 50, status: str | None = None):
        limited(request, "list_runs")
        return await authenticated(request, service.list_runs, _api_key(request), limit, status, store_only=True)

    def _scheduler_caller(request: Request) -> str:
        return authenticate_scheduler(request.headers, settings, verify_oidc)

    @app.post("/api/v1/scheduler/trigger")
    async def trigger(request: Request):
        limited(request, "trigger", by_key=False)
        body = await request.body()
        caller = await authenticated(request, _scheduler_caller, request)
        check_json(request.headers.get("content-type", ""), body)
        log.info("scheduler trigger by %s", caller)
        return JSONResponse(await run_in_threadpool(service.trigger, body), status_code=202)

    @app.post("/api/v1/reconcile")
    async def reconcile(request: Request):
        limited(request, "reconcile", by_key=False)
        caller = await authenticated(request, _scheduler_caller, request)
        closed = await run_in_threadpool(service.reconcile)
        log.info("reconcile by %s closed %d run(s)", caller, len(closed))
        return {"closed": closed}

    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["X-API-Key", "Content-Type", "X-Request-ID"], expose_headers=["X-Request-ID"])
    app.add_middleware(RequestContext, max_body_bytes=settings.max_body_bytes)
    return app
