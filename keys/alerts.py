"""Budget alerts: before a key's (or a person's) monthly budget runs out, its owner hears of it.

Run by `manage.py housekeeping` from the cached organization usage (keys/usage.py): no call per
key. Each alert is a `BudgetAlert` row, unique per key (or person), threshold and month, written
in the same transaction as the e-mail is handed to the mail server: sent once, however many
instances run the check, and a mail failure leaves it to the next run. PORTAL_ALERT_WEBHOOK_URL
then gets it too (after the commit; a failure there is logged and blocks nothing).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from decimal import Decimal

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.urls import reverse

from portal import http
from portal.audit import chain
from portal.audit.models import AuditEvent

from . import policy, usage
from .models import BudgetAlert, IssuedKey

log = logging.getLogger(__name__)
Kind = BudgetAlert.Kind


def crossed(spend: Decimal, limit: Decimal) -> list[int]:
    """The thresholds (percent) that `spend` has reached; none without a cap."""
    if not limit or limit <= 0:
        return []
    return [t for t in settings.PORTAL_BUDGET_ALERTS if spend * 100 >= limit * t]


def link(path: str) -> str:
    return settings.PORTAL_BASE_URL + path


def check(now=None) -> str:
    """Send every alert that is due. Raises if the usage is unavailable or an alert could not be
    sent (the job is then reported failed and runs again next time; sent ones are not repeated)."""
    org = usage.org_usage()
    if not org.ok:
        raise RuntimeError(org.error)
    month = usage.month_start(org.today)
    done = {
        (kind, key_id or user_id, threshold)
        for kind, key_id, user_id, threshold in BudgetAlert.objects.filter(month=month).values_list(
            "kind", "key_id", "user_id", "threshold"
        )
    }
    keys = IssuedKey.objects.filter(owner__isnull=False).filter(
        Q(status=IssuedKey.Status.ACTIVE) | Q(ended_at__date__gte=month)
    )
    sent, failed = 0, 0
    per_owner: dict = defaultdict(Decimal)
    owners = {}
    for key in keys.select_related("owner", "issuance"):
        spend = org.key(key.api_key_id).month_spend
        per_owner[key.owner_id] += spend
        owners[key.owner_id] = key.owner
        if key.status != IssuedKey.Status.ACTIVE:
            continue
        for threshold in crossed(spend, key.monthly_limit):
            if (Kind.KEY, key.pk, threshold) not in done:
                ok = _alert(Kind.KEY, owners[key.owner_id], threshold, month, spend, key.monthly_limit, key=key)
                sent, failed = sent + ok, failed + (not ok)
    for owner_id, spend in per_owner.items():
        if not spend:
            continue
        total = policy.resolve(owners[owner_id]).max_total_limit
        for threshold in crossed(spend, total or 0):
            if (Kind.PERSON, owner_id, threshold) not in done:
                ok = _alert(Kind.PERSON, owners[owner_id], threshold, month, spend, total)
                sent, failed = sent + ok, failed + (not ok)
    if failed:
        raise RuntimeError(f"{failed} budget alert(s) could not be sent ({sent} sent); they are retried next run")
    return f"{sent} budget alert(s) sent"


def _alert(kind, owner, threshold: int, month, spend: Decimal, limit: Decimal, key: IssuedKey | None = None) -> bool:
    subject, text = _message(kind, owner, threshold, spend, limit, key)
    try:
        with transaction.atomic():
            BudgetAlert.objects.create(
                kind=kind, key=key, user=owner, threshold=threshold, month=month, spend=spend, limit=limit
            )
            send_mail(subject, text, None, [owner.email])  # before the audit: the chain's lock is not held meanwhile
            chain.record(
                AuditEvent.Action.SPEND_ALERT_SENT,
                AuditEvent.Outcome.SUCCESS,
                actor=None,
                issuance=key.issuance if key else None,
                **({} if key else {"key_name": f"all keys of {owner.get_username()}", "monthly_limit": limit}),
                detail=f"{kind} alert at {threshold}% for {owner.get_username()}: ${spend:.2f} of ${limit:.2f}",
            )
    except IntegrityError:
        return True  # another instance sent it meanwhile
    except Exception:
        log.exception("Budget alert could not be sent", extra={"threshold": threshold, "kind": kind})
        return False
    if settings.PORTAL_ALERT_WEBHOOK_URL:
        http.post_json(settings.PORTAL_ALERT_WEBHOOK_URL, {"text": f"{subject}\n{text}"}, what="alert webhook")
    return True


def _message(kind, owner, threshold: int, spend: Decimal, limit: Decimal, key: IssuedKey | None) -> tuple[str, str]:
    percent = int(spend * 100 / limit)
    if key is not None:
        subject = f"Key “{key.name}” has used {percent}% of its monthly limit"
        text = (
            f"Your Requesty key “{key.name}” ({owner.get_username()}) has spent ${spend:.2f} of its "
            f"${limit:.2f} monthly limit this month (UTC), {percent}%, past the {threshold}% alert.\n\n"
            "At 100% Requesty refuses its requests until the month ends. You can raise its limit within "
            "your policy, or ask for more, on the key's page:\n"
            f"{link(reverse('keys:detail', args=[key.pk]))}\n"
        )
    else:
        subject = f"Your keys have used {percent}% of your monthly total"
        text = (
            f"Your Requesty keys ({owner.get_username()}) have spent ${spend:.2f} this month (UTC), "
            f"{percent}% of the ${limit:.2f} your policy allows across all your keys, past the {threshold}% alert.\n\n"
            f"Your keys: {link(reverse('keys:list'))}\n"
        )
    return subject, text
