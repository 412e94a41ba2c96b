"""completion: marks campaigns completed and announces their figures; pauses campaigns whose
bounce or complaint rate passed its limit (the circuit breaker); archives the items of
campaigns that ended long ago; turns each delivery.results into one contact.activity for
the CRM's timeline."""

from __future__ import annotations

from faststream.rabbit import RabbitRouter
from faststream.rabbit.annotations import RabbitMessage
from mailroom_common import activity
from mailroom_common.events import CampaignGenerated, DeliveryResults, Event
from mailroom_common.intake import subscribe
from mailroom_common.jobs import MARK_CAMPAIGNS_COMPLETED
from mailroom_common.runtime import Runtime
from mailroom_common.service import PeriodicTask, Service

from mailroom_completion.breaker import CircuitBreaker
from mailroom_completion.completion import CompletionTracker
from mailroom_completion.item_gauges import update_item_gauges
from mailroom_completion.retention import Retention

EVENTS: dict[str, type[Event]] = {
    DeliveryResults.routing_key: DeliveryResults,
    CampaignGenerated.routing_key: CampaignGenerated,
}


def build(runtime: Runtime) -> Service:
    router = RabbitRouter()
    queue = runtime.topology.completion_events
    tracker = CompletionTracker(runtime)
    breaker = CircuitBreaker(runtime)

    async def process(event: Event, _: RabbitMessage) -> None:
        if isinstance(event, DeliveryResults) and runtime.settings.activity_events:
            # before the completion it may cause, so a campaign's last activity comes before
            # campaign.completed; raises when the broker is away: the message comes back
            # (the activity is published at least once)
            await activity.publish(runtime, await activity.delivery_activities(runtime.pool, event))
        campaign_id = getattr(event, "campaign_id", None)
        if campaign_id is not None:
            if isinstance(event, DeliveryResults):
                await breaker.check(campaign_id)
            await tracker.check(campaign_id)

    async def check_running_campaigns() -> None:
        await breaker.check()
        await tracker.sweep()

    subscribe(router, runtime, queue, runtime.topology.events, EVENTS, process)

    sweep = PeriodicTask(
        "mark-campaigns-completed",
        runtime.settings.sweep_interval_seconds,
        check_running_campaigns,
        job=MARK_CAMPAIGNS_COMPLETED,
    )
    retention = Retention(runtime)
    archive = PeriodicTask(
        "archive-finished-campaigns", runtime.settings.sweep_interval_seconds, retention.sweep
    )
    gauges = PeriodicTask(
        "count-campaign-items",
        runtime.settings.sweep_interval_seconds,
        lambda: update_item_gauges(runtime),
    )
    return Service("completion", router, periodic=[sweep, archive, gauges])
