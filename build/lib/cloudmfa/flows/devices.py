"""Remembered devices (API.md "Remembered devices"): listing and forgetting one's own."""

from __future__ import annotations

from cloudmfa.errors import NotFound
from cloudmfa.flows.context import RequestInfo
from cloudmfa.flows.deps import Database
from cloudmfa.flows.principal import Principal
from cloudmfa.store import devices as device_repo
from cloudmfa.store.audit import record
from cloudmfa.store.devices import RememberedDevice


async def list_devices(svc: Database, principal: Principal) -> list[RememberedDevice]:
    async with svc.reader.connect() as conn:
        return await device_repo.list_devices(conn, principal.user.id, svc.clock.now())


async def forget_device(
    svc: Database, principal: Principal, info: RequestInfo, device_id: str
) -> None:
    async with svc.engine.begin() as conn:
        if not await device_repo.delete_device(conn, device_id, principal.user.id):
            raise NotFound("No such device.")
        await record(
            conn,
            svc.clock.now(),
            info.event("device.forgotten", subject_id=principal.user.id, device_id=device_id),
        )
