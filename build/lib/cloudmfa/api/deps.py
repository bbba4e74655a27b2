"""FastAPI dependencies: the only place the web framework meets the flows."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from cloudmfa.errors import InvalidToken
from cloudmfa.flows.context import RequestInfo
from cloudmfa.flows.principal import Principal, authenticate
from cloudmfa.services import Services


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def request_info(request: Request) -> RequestInfo:
    return RequestInfo(
        ip=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
    )


# Dependencies are `async def` even where they do not await: FastAPI runs a plain `def`
# dependency in a worker thread, and that hand-off costs more than the work itself.
async def get_services(request: Request) -> Services:
    return services_of(request)


async def get_request_info(request: Request) -> RequestInfo:
    return request_info(request)


def _bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidToken("Send an access token as 'Authorization: Bearer <token>'.")
    return token.strip()


ServicesDep = Annotated[Services, Depends(get_services)]
InfoDep = Annotated[RequestInfo, Depends(get_request_info)]


# The dependencies below take the Request itself rather than ServicesDep: FastAPI spends
# 8-15 µs of CPU per dependency it solves, on every request (bench/micro.py).


async def get_principal_any(request: Request) -> Principal:
    """Any valid session, including one the MFA policy confines to enrolling a factor."""
    return await authenticate(services_of(request), _bearer_token(request))


async def get_principal(principal: Annotated[Principal, Depends(get_principal_any)]) -> Principal:
    principal.require_unconfined()
    return principal


async def get_admin(principal: Annotated[Principal, Depends(get_principal_any)]) -> Principal:
    principal.require_admin()
    return principal


# /me, enrolling and activating the first factor, and logout accept a confined session.
AnySessionDep = Annotated[Principal, Depends(get_principal_any)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
AdminDep = Annotated[Principal, Depends(get_admin)]
