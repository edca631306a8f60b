"""Cost attribution in Requesty itself: every key the portal creates carries labels saying whose it is.

`owner`, `owner_email`, `team` (the owner's policy group), `portal_ref` (the issuance reference) and
`template` (the onboarding slug) are the portal's labels. Requesty's label call replaces the whole
set, so labels set elsewhere (Requesty's dashboard) are merged in from the key list; a portal label
with no value (no team) is removed. A failed call never costs anyone their key: the key simply
stays unconfirmed (`IssuedKey.labels_applied`), and `housekeeping` (or `manage.py label_keys`) sends
it again, as it does when the wanted set changes (an owner moved to another team).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from django.contrib.auth.models import Group
from django.db import transaction

from portal.audit import chain
from portal.audit.models import AuditEvent

from . import requesty, sidecalls
from .models import IssuedKey

log = logging.getLogger(__name__)
PORTAL_LABELS = ("owner", "owner_email", "team", "portal_ref", "template")
PER_RUN = 200  # keys labelled per housekeeping run, so a backlog never becomes a burst of calls


def teams(user_ids) -> dict[int, str]:
    """Each user's team: the first (by name) of their groups that has a spending policy."""
    found: dict[int, str] = {}
    rows = Group.objects.filter(spending_policy__isnull=False, user__in=user_ids).order_by("name")
    for user_id, name in rows.values_list("user", "name"):
        found.setdefault(user_id, name)
    return found


def wanted(key: IssuedKey, team: str) -> dict[str, str]:
    """The portal's labels for a key; empty values mean "remove this label"."""
    owner = key.owner
    return {
        "owner": owner.get_username() if owner else "",
        "owner_email": owner.email if owner else "",
        "team": team,
        "portal_ref": key.issuance.reference,
        "template": key.template,
    }


def merged(upstream: dict[str, str], portal: dict[str, str]) -> dict[str, str]:
    """Labels set elsewhere are kept; the portal's own replace theirs, and empty ones go."""
    labels = {k: v for k, v in upstream.items() if k not in PORTAL_LABELS}
    labels.update({k: v for k, v in portal.items() if v})
    return labels


def apply(key: IssuedKey, portal: dict[str, str], upstream: dict[str, str], *, actor=None) -> bool:
    """Send the merged labels; on success remember them. Audited either way; never raises for Requesty."""
    labels = merged(upstream, portal)
    sent = sidecalls.attempt(partial(requesty.set_labels, key.api_key_id, labels))
    return record_outcome(key, portal, labels, sent, actor=actor)


def record_outcome(key: IssuedKey, portal: dict[str, str], labels: dict[str, str], error, *, actor=None) -> bool:
    """What the label call sending `labels` came to (`error`: what it raised; None: Requesty
    confirmed them): the confirmed portal labels remembered, or the failure audited, to be sent
    again by housekeeping. Raises only what a Requesty call should never raise."""
    detail = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))[:400]
    said = AuditEvent.Outcome  # (this module's Outcome is a housekeeping run's)
    if error is None:
        action, outcome, status = AuditEvent.Action.KEY_LABELLED, said.SUCCESS, 204
    elif isinstance(error, (requesty.RequestyError, ValueError)):
        log.warning("Requesty label call failed: %s", type(error).__name__, extra={"api_key_id": key.api_key_id})
        unknown = isinstance(error, requesty.OutcomeUnknown)
        action, outcome = AuditEvent.Action.KEY_LABEL_FAILED, said.UNKNOWN if unknown else said.FAILURE
        status, detail = getattr(error, "status", None), f"{type(error).__name__}; will be retried: {detail}"[:500]
    else:
        raise error
    # Confirmed labels and their event commit together, in the append's own transaction (one commit,
    # not two; joined without a savepoint when a caller has one open, as `chain.record` is).
    with transaction.atomic(savepoint=False):
        if error is None:
            IssuedKey.objects.filter(pk=key.pk).update(labels_applied=portal)
        chain.record(
            action, outcome, actor=actor, issuance=key.issuance, api_key_id=key.api_key_id,
            upstream_status=status, detail=detail,
        )  # fmt: skip
    if error is None:
        key.labels_applied = portal
    return error is None


@dataclass(frozen=True)
class NewKeyLabels:
    """The label call for a key just minted, split so that the call can go out from another thread
    (keys/sidecalls.py) while its outcome is recorded in the request thread. A new key has no
    labels from elsewhere yet, so no list call is needed."""

    key: IssuedKey
    portal: dict[str, str]
    labels: dict[str, str]

    def call(self) -> Callable[[], None]:
        """The HTTP call alone: the key's id and its labels, no model, no database."""
        return partial(requesty.set_labels, self.key.api_key_id, self.labels)

    def record(self, error: Exception | None) -> None:
        """Never raises: the person already has their key, and nothing here may take it from them."""
        try:
            record_outcome(self.key, self.portal, self.labels, error, actor=self.key.owner)
        except Exception:
            _logged_for_housekeeping(self.key)


def for_new_key(key: IssuedKey, team: str | None = None) -> NewKeyLabels | None:
    """The labels a key just minted gets. `team`: the owner's, as read with their policy when
    minting (None: read here). None if even that failed (logged: the key stays unlabelled, and
    housekeeping labels it)."""
    try:
        if team is None:
            team = teams([key.owner_id]).get(key.owner_id, "") if key.owner_id else ""
        portal = wanted(key, team)
    except Exception:
        _logged_for_housekeeping(key)
        return None
    return NewKeyLabels(key, portal, merged({}, portal))


def _logged_for_housekeeping(key: IssuedKey) -> None:
    log.exception("Labelling a new key failed; housekeeping will retry", extra={"api_key_id": key.api_key_id})


@dataclass
class Outcome:
    labelled: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    due: list[tuple[IssuedKey, dict[str, str]]] = field(default_factory=list)
    more: int = 0

    def summary(self, dry_run: bool = False) -> str:
        if dry_run:
            return f"{len(self.due) + self.more} key(s) would be labelled"
        text = f"{len(self.labelled)} labelled, {len(self.failed)} failed"
        return text + (f", {self.more} left for the next run" if self.more else "")


def due(limit: int | None = PER_RUN) -> Outcome:
    """Active keys whose confirmed labels differ from what the portal wants (never sent, failed,
    or the owner's team or e-mail changed)."""
    keys = list(IssuedKey.objects.filter(status=IssuedKey.Status.ACTIVE).select_related("owner", "issuance"))
    team_of = teams({k.owner_id for k in keys if k.owner_id})
    outcome = Outcome()
    for key in keys:
        portal = wanted(key, team_of.get(key.owner_id, ""))
        if key.labels_applied != portal:
            if limit is not None and len(outcome.due) >= limit:
                outcome.more += 1
            else:
                outcome.due.append((key, portal))
    return outcome


def label_due(*, dry_run: bool = False, limit: int | None = PER_RUN) -> Outcome:
    """Label every key that needs it, merging with the labels Requesty's list shows (one list call)."""
    outcome = due(limit)
    if dry_run or not outcome.due:
        return outcome
    upstream = {info.id: info.labels for info in requesty.list_keys()}  # raises: the job fails, retried
    for key, portal in outcome.due:
        if key.api_key_id not in upstream:
            continue  # gone upstream: reconciliation deals with it
        ok = apply(key, portal, upstream[key.api_key_id])
        (outcome.labelled if ok else outcome.failed).append(key.name)
    return outcome
