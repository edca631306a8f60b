"""Minting a key: the issuance state machine of docs/security.md in one function.

1. Commit an issuance record (state `requested`) and its audit event *before* calling Requesty;
   the unique form nonce makes a replayed or double-clicked form mint nothing.
2. Call Requesty once (never retried) to create the key; then set its expiry and labels, the two
   calls side by side (Requesty takes neither at creation).
3. Record the outcome: `issued`, `rejected` (a definite no) or `unknown` (it may exist upstream).
4. If Requesty created the key but the record cannot be committed, delete it upstream
   (compensation): no secret is shown without its audit record.
5. The secret is returned to the caller only, wrapped in `Secret`, and stored nowhere.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, IntegrityError, transaction
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from portal.audit import chain
from portal.audit.models import AuditEvent

from . import expiry, labels, policy, requesty, sidecalls
from .faultpoints import reached
from .models import ApprovalRequest, Issuance, IssuedKey

log = logging.getLogger(__name__)
Action, Outcome, State = AuditEvent.Action, AuditEvent.Outcome, Issuance.State


@dataclass(frozen=True)
class Minted:
    key: IssuedKey
    secret: requesty.Secret


class MintError(Exception):
    """A mint that produced no secret. `kind` says what the user may conclude:
    rejected (nothing was created), unknown (it may exist, being checked), failed (created and
    removed again), duplicate, unavailable (portal database down), rate_limited, beyond_policy."""

    def __init__(self, kind: str, message: str, status: int, reference: str = "", retry_after: int | None = None):
        super().__init__(message)
        self.kind, self.message, self.status = kind, message, status
        self.reference, self.retry_after = reference, retry_after


UNKNOWN_MESSAGE = (
    "We could not confirm whether Requesty created the key, so no key is shown. "
    "Please do not submit this form again: the portal checks with Requesty every {minutes} minutes and "
    "removes any key that was created; until then the request shows on My keys as “outcome unknown”. "
    "You can then create a new key. Quote reference {ref} if you contact the portal admins."
)


@sensitive_variables()
def mint_key(
    *,
    actor,
    cleaned: dict,
    nonce: str,
    source_ip: str | None,
    approval_id: int | None = None,
    rotates: IssuedKey | None = None,
) -> Minted:
    """`cleaned["expires_at"]`: when the key ends (None: never; absent: the policy's longest).
    `rotates`: the key this one replaces (keys/rotation.py), which then does not count against
    the caps; it is not touched here."""
    issuance, team = _open_issuance(actor, cleaned, nonce, source_ip, approval_id, rotates)
    try:
        reached("before_upstream")
        created = requesty.create_key(issuance.upstream_name, issuance.monthly_limit, issuance.permissions)
        reached("after_reply")
    except requesty.Rejected as exc:
        _finish(issuance, State.REJECTED, Action.MINT_REJECTED, Outcome.FAILURE, exc)
        _give_back_approval(issuance)
        raise _rejected_error(exc, issuance) from None
    except requesty.OutcomeUnknown as exc:
        _finish(issuance, State.UNKNOWN, Action.MINT_UNKNOWN, Outcome.UNKNOWN, exc)
        if isinstance(exc, requesty.MalformedResponse) and exc.api_key_id:
            # Requesty made a key but its answer is unusable: nobody can receive it, so remove it.
            _compensate(issuance, exc.api_key_id)
        message = UNKNOWN_MESSAGE.format(ref=issuance.reference, minutes=settings.PORTAL_RECONCILE_MINUTES)
        raise MintError("unknown", message, 202, issuance.reference) from None

    try:
        key = _record_issued(issuance, created.api_key_id, cleaned.get("template") or "")
        reached("after_commit")
    except Exception:
        log.exception("Recording issued key failed; compensating", extra={"reference": issuance.reference})
        compensated = _compensate(issuance, created.api_key_id)
        if compensated:
            _give_back_approval(issuance)
        message = (
            "The key could not be recorded, so it was deleted again for safety. No key was issued; "
            f"please try again shortly. Reference {issuance.reference}."
            if compensated
            else "The key could not be recorded and is being removed again; no key was issued. "
            f"Please try again later and quote reference {issuance.reference} if it persists."
        )
        raise MintError("failed", message, 503, issuance.reference) from None
    _expiry_and_labels(key, actor, source_ip, team)
    return Minted(key=key, secret=created.api_key)


def _expiry_and_labels(key: IssuedKey, actor, source_ip: str | None, team: str | None) -> None:
    """Requesty takes neither at creation: two more calls, which need nothing from each other, so
    the label call goes out from a pool thread (keys/sidecalls.py) while this thread sets the
    expiry, and the mint waits for one latency, not two. Both outcomes are recorded here, in this
    thread, once both calls are back (so no call of this mint competes with its audit appends), the
    expiry's first, as before. The key exists and works whatever happens now: a failed expiry call
    marks it "expiry not yet set in Requesty" and a failed label call leaves its labels
    unconfirmed; housekeeping retries both (and enforces the expiry itself)."""
    labelling = labels.for_new_key(key, team)  # None: logged, housekeeping labels it
    if key.expires_at is None:  # one call: nothing to overlap
        if labelling is not None:
            labelling.record(sidecalls.attempt(labelling.call()))
        return
    pending = sidecalls.start(labelling.call()) if labelling is not None else None
    sent = key.expires_at
    expiry_error = expiry.send(key, sent)
    label_error = pending.outcome() if pending is not None else None
    try:
        expiry.pushed(key, sent, expiry_error, actor=actor, source_ip=source_ip)
    finally:
        if labelling is not None:
            labelling.record(label_error)  # never raises


def _open_issuance(
    actor, cleaned: dict, nonce: str, source_ip: str | None, approval_id: int | None, rotates: IssuedKey | None
) -> tuple[Issuance, str | None]:
    """Check the rate limit and the policy (or the approval) and write the issuance record in one
    transaction, under a per-user lock, so parallel requests cannot together exceed a cap. Returns
    the record and the actor's team as read with the policy (Policy.team), for the key's labels."""
    try:
        with transaction.atomic():
            policy.lock_user(actor)
            _check_rate_limit(actor)
            approval = _claim_approval(actor, cleaned, approval_id) if approval_id else None
            # Policy and headroom are read again here, under the lock: parallel mints cannot
            # together exceed a cap (threat 11), and a group change made while this request waited
            # for the lock applies to it.
            pol = policy.resolve(actor)
            expires_at = cleaned.get("expires_at", policy.latest_expiry(pol, timezone.now()))
            if problem := policy.lifetime_problem(pol, expires_at, timezone.now()):
                raise MintError("beyond_policy", problem, 403)  # an approval covers values, never lifetime
            room = _room_for_rotation(actor, pol, rotates) if rotates is not None else None
            if approval is None and (problems := policy.violations(actor, cleaned, pol, room)):
                raise MintError("beyond_policy", " ".join(problems), 403)
            issuance = Issuance.objects.create(
                nonce=nonce,
                actor=actor,
                name=cleaned["name"],
                source_ip=source_ip,
                expires_at=expires_at,
                rotates=rotates,
                **_asked(cleaned),
            )
            chain.record(Action.MINT_REQUESTED, Outcome.PENDING, issuance=issuance)
            if approval is not None:
                approval.status, approval.issuance = ApprovalRequest.Status.USED, issuance
                approval.save(update_fields=["status", "issuance"])
                chain.record(
                    Action.APPROVAL_USED, Outcome.SUCCESS, issuance=issuance, detail=f"approval #{approval.pk}"
                )
    except MintError as exc:
        _audit_refusal(actor, cleaned, source_ip, exc)
        raise
    except IntegrityError:
        if Issuance.objects.filter(nonce=nonce).exists():
            _audit_refusal(actor, cleaned, source_ip, MintError("duplicate", "form nonce already used", 409))
            raise MintError(
                "duplicate",
                "This request was already submitted, so nothing new was created. "
                "Reload the form if you want another key.",
                409,
            ) from None
        raise
    except DatabaseError:
        log.exception("Portal database unavailable before minting")
        raise MintError(
            "unavailable",
            "The portal cannot reach its database right now, so no key was created. Try again in a few minutes.",
            503,
        ) from None
    return issuance, pol.team


def _room_for_rotation(actor, pol: policy.Policy, old: IssuedKey) -> policy.Headroom:
    """A rotation may briefly take the person over their caps: the old key is about to end, so it
    does not count. Only the owner's active, not yet rotated key can be rotated, once."""
    old = IssuedKey.objects.filter(pk=old.pk).first()
    if old is None or old.owner_id != actor.pk or old.status != IssuedKey.Status.ACTIVE:
        raise MintError("rejected", "Only your own active keys can be rotated; nothing was created.", 409)
    if old.rotations.filter(state__in=[State.REQUESTED, State.UNKNOWN, State.ISSUED]).exists():
        raise MintError("duplicate", "This key was already rotated (or its rotation is being checked).", 409)
    return policy.headroom(actor, pol).without(old)


def _check_rate_limit(actor) -> None:
    """At most PORTAL_MINTS_PER_HOUR attempts per user per rolling hour, counted in the database so
    it holds across processes. If the count cannot be read, the DatabaseError refuses the mint."""
    limit = settings.PORTAL_MINTS_PER_HOUR
    since = timezone.now() - timedelta(hours=1)
    # Only keys made or in the making count: a definite "no" (Requesty down or refusing), an unknown
    # outcome or a key removed again gave the person nothing, and an outage must not lock them out.
    # Unknown outcomes still count against the policy's caps until reconciliation settles them.
    recent = Issuance.objects.filter(actor=actor, created_at__gte=since, state__in=[State.ISSUED, State.REQUESTED])
    if recent[:limit].count() >= limit:  # counts at most `limit` rows, however many there are
        wait = seconds_until_an_hour_after(recent.order_by("created_at").values_list("created_at", flat=True).first())
        raise MintError(
            "rate_limited",
            f"You have created {limit} keys in the last hour, the most allowed. "
            f"Try again in {in_minutes(wait)}; nothing was created.",
            429,
            retry_after=wait,
        )


def seconds_until_an_hour_after(moment) -> int:
    """Retry-After for rolling-hour counts: when `moment`, the event that keeps the count at the
    bound, leaves the hour (at least 1 s)."""
    return max(1, int((moment + timedelta(hours=1) - timezone.now()).total_seconds()) + 1)


def in_minutes(seconds: int) -> str:
    minutes = (seconds + 59) // 60
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


def _claim_approval(actor, cleaned: dict, approval_id: int) -> ApprovalRequest:
    approval = (  # only an approval of a new key: one for a higher limit cannot mint
        ApprovalRequest.objects.select_for_update()
        .filter(pk=approval_id, requester=actor, kind=ApprovalRequest.Kind.NEW_KEY)
        .first()
    )
    if approval is None or not approval.is_usable:
        raise MintError("beyond_policy", "This approval is not valid any more (used, expired or not yours).", 403)
    wanted = (approval.name, approval.monthly_limit, approval.manage, approval.completions)
    if wanted != (cleaned["name"], cleaned["monthly_limit"], cleaned["manage"], cleaned["completions"]):
        raise MintError("beyond_policy", "An approval is only good for exactly the values that were approved.", 403)
    return approval


def _give_back_approval(issuance: Issuance) -> None:
    """Requesty definitely created nothing: the approval may be used again."""
    try:
        ApprovalRequest.objects.filter(issuance=issuance, status=ApprovalRequest.Status.USED).update(
            status=ApprovalRequest.Status.APPROVED, issuance=None
        )
    except DatabaseError:
        log.exception("Could not give an approval back", extra={"reference": issuance.reference})


def _asked(cleaned: dict) -> dict:
    """The limit and permissions the form asked for: what an issuance records and a refusal audits."""
    return {field: cleaned[field] for field in ("monthly_limit", "manage", "completions")}


def _audit_refusal(actor, cleaned: dict, source_ip: str | None, exc: MintError) -> None:
    action = {"duplicate": Action.MINT_DUPLICATE, "rate_limited": Action.MINT_RATE_LIMITED}.get(
        exc.kind, Action.MINT_DENIED
    )
    try:
        chain.record(
            action,
            Outcome.DENIED,
            actor=actor,
            source_ip=source_ip,
            key_name=cleaned["name"],
            detail=exc.message,
            **_asked(cleaned),
        )
    except DatabaseError:
        log.exception("Could not audit a refused mint")


@sensitive_variables()
def _record_issued(issuance: Issuance, api_key_id: str, template: str = "") -> IssuedKey:
    with transaction.atomic():
        issuance.state, issuance.api_key_id, issuance.upstream_status = State.ISSUED, api_key_id, 201
        issuance.save(update_fields=["state", "api_key_id", "upstream_status", "updated_at"])
        key = IssuedKey.objects.create(
            api_key_id=api_key_id,
            issuance=issuance,
            owner=issuance.actor,
            name=issuance.name,
            monthly_limit=issuance.monthly_limit,
            manage=issuance.manage,
            completions=issuance.completions,
            template=template[:50],
            expires_at=issuance.expires_at,
        )
        chain.record(Action.MINT_ISSUED, Outcome.SUCCESS, issuance=issuance, upstream_status=201)
    return key


def _finish(issuance: Issuance, state: str, action: str, outcome: str, exc: requesty.RequestyError) -> None:
    """Record a non-issued outcome. If the database is down too, the record stays `requested`
    and reconciliation resolves it later."""
    level = logging.ERROR if isinstance(exc, requesty.AuthFailed) else logging.WARNING
    log.log(
        level,
        "Requesty create failed: %s",
        type(exc).__name__,
        extra={"reference": issuance.reference, "upstream_status": exc.status, "upstream_message": exc.message},
    )
    try:
        with transaction.atomic():
            issuance.state, issuance.upstream_status = state, exc.status
            issuance.save(update_fields=["state", "upstream_status", "updated_at"])
            chain.record(action, outcome, issuance=issuance, upstream_status=exc.status, detail=type(exc).__name__)
    except DatabaseError:
        log.exception("Could not record issuance outcome", extra={"reference": issuance.reference})


def _compensate(issuance: Issuance, api_key_id: str) -> bool:
    """Delete a key nobody may receive. True when it is gone upstream (a 404 counts: already gone)."""
    try:
        requesty.delete_key(api_key_id)
        gone, detail = True, "deleted upstream"
    except requesty.NotFound:
        gone, detail = True, "already gone upstream"
    except requesty.RequestyError as exc:
        gone, detail = False, f"delete failed: {type(exc).__name__}"
    log.log(
        logging.WARNING if gone else logging.ERROR,
        "Compensation for issuance: %s",
        detail,
        extra={"reference": issuance.reference, "api_key_id": api_key_id},
    )
    try:
        with transaction.atomic():
            issuance.api_key_id = api_key_id
            issuance.state = State.COMPENSATED if gone else State.UNKNOWN
            issuance.save(update_fields=["state", "api_key_id", "updated_at"])
            chain.record(
                Action.KEY_COMPENSATED if gone else Action.KEY_COMPENSATION_FAILED,
                Outcome.SUCCESS if gone else Outcome.FAILURE,
                issuance=issuance,
                detail=detail,
            )
    except DatabaseError:
        log.exception("Could not record compensation", extra={"reference": issuance.reference})
    return gone


def _rejected_error(exc: requesty.Rejected, issuance: Issuance) -> MintError:
    ref = issuance.reference
    if isinstance(exc, requesty.NotSent):
        message = "Requesty could not be reached, so no key was created. Please try again in a minute."
        return MintError("rejected", message, 503, ref)
    if isinstance(exc, requesty.RateLimited):
        wait = f"in {exc.retry_after} seconds" if exc.retry_after else "in a minute"
        return MintError(
            "rejected", f"Requesty is busy, so no key was created. Try again {wait}.", 429, ref, exc.retry_after
        )
    if isinstance(exc, requesty.AuthFailed):
        message = (
            "The portal is misconfigured and cannot create keys right now; the portal admins have been "
            f"notified. No key was created. Reference {ref}."
        )
        return MintError("rejected", message, 502, ref)
    message = (
        "Requesty refused these values, so no key was created. Check the name and limit and try again; "
        f"if it keeps happening, quote reference {ref} to the portal admins."
    )
    return MintError("rejected", message, 502, ref)
