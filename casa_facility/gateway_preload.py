"""The scheduler preload of facility clusters: dask-gateway's, plus a configurable idle-worker time.

dask-gateway's preload (``dask_gateway.scheduler_preload``) scales down once the adaptive target
has stayed below the worker count for a fixed window of 3 periods. casa sets the window from the
cluster option ``idle_worker_timeout`` (seconds) and a short period (fast scale-up), so a worker
is released ``idle_worker_timeout`` after its last task whatever the period.
"""

from __future__ import annotations

import math
import sys

import click
from dask_gateway import scheduler_preload as upstream


@click.command()
@click.option("--dg-adaptive-period", default=3.0, type=float)
@click.option("--dg-heartbeat-period", default=15.0, type=float)
@click.option("--dg-idle-timeout", type=float, default=0.0)
@click.option("--dg-api-address", type=str, default=":0")
@click.option("--casa-idle-worker-timeout", type=float, default=0.0,
              help="Seconds a worker may stay idle before adaptive scaling releases it")
def dask_setup(scheduler, dg_adaptive_period, dg_heartbeat_period, dg_idle_timeout, dg_api_address,
               casa_idle_worker_timeout):
    try:
        host, port = dg_api_address.rsplit(":", 1)
        window = (max(1, math.ceil(casa_idle_worker_timeout / dg_adaptive_period))
                  if casa_idle_worker_timeout > 0 and dg_adaptive_period > 0 else 3)
        service = upstream.GatewaySchedulerService(
            scheduler, gateway=upstream.make_gateway_client(), adaptive_period=dg_adaptive_period,
            adaptive_window=window, heartbeat_period=dg_heartbeat_period, idle_timeout=dg_idle_timeout)
        service.listen((host, int(port)))
    except Exception:
        upstream.logger.error("Error starting the casa gateway service", exc_info=True)
        sys.exit(1)
    scheduler.services["gateway"] = service
