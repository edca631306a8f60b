"""The audit trail: one append-only, hash-chained table of who did what, when, from where."""

from django.conf import settings
from django.db import models


class AppendOnlyQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise PermissionError("Audit events are append-only.")

    def delete(self):
        raise PermissionError("Audit events are append-only.")


OWN_ACTIONS = ["audit.viewed", "audit.exported"]  # the log's own events: every AuditEvent.Action "audit.*" (tested)


class AuditEvent(models.Model):
    """Who did what, when, from where, and what happened.

    Append-only: the model refuses updates and deletes (and on PostgreSQL a trigger refuses them
    too). Tamper-evident: `seq` numbers events without gaps and `hash` is an HMAC over the previous
    hash and this event's canonical form (portal/audit/chain.py), so a changed, removed or reordered row
    breaks the chain that `manage.py verify_audit` walks. The actor's name and e-mail are copied, so
    renaming or deleting the user later does not rewrite history. Append only via `chain.record`.
    """

    class Action(models.TextChoices):
        MINT_REQUESTED = "mint.requested", "Key requested"
        MINT_ISSUED = "mint.issued", "Key created"
        MINT_REJECTED = "mint.rejected", "Key refused by Requesty"
        MINT_UNKNOWN = "mint.unknown", "Key outcome unknown"
        MINT_DENIED = "mint.denied", "Key request refused by policy"
        MINT_DUPLICATE = "mint.duplicate", "Repeated key request ignored"
        MINT_RECORD_FAILED = "mint.record_failed", "Key created but not recorded"
        KEY_COMPENSATED = "key.compensated", "Unrecorded key deleted again"
        KEY_COMPENSATION_FAILED = "key.compensation_failed", "Deleting an unrecorded key failed"
        KEY_LIMIT_REQUESTED = "key.limit_requested", "Limit change sent"
        KEY_LIMIT_CHANGED = "key.limit_changed", "Limit changed"
        KEY_LIMIT_FAILED = "key.limit_failed", "Limit change failed or refused"
        KEY_REVOKED = "key.revoked", "Key revoked"
        KEY_REVOKE_FAILED = "key.revoke_failed", "Revoking failed"
        KEY_DELETED_UPSTREAM = "key.deleted_upstream", "Key deleted outside the portal"
        # Expiry and rotation (keys/expiry.py, keys/rotation.py, keys/reminders.py).
        KEY_EXPIRY_SET = "key.expiry_set", "Expiry set in Requesty"
        KEY_EXPIRY_FAILED = "key.expiry_failed", "Expiry not set"
        KEY_EXPIRED = "key.expired", "Key expired"
        KEY_EXPIRY_REMINDED = "key.expiry_reminded", "Expiry reminder sent"
        KEY_ROTATED = "key.rotated", "Key rotated"
        KEY_ROTATION_FAILED = "key.rotation_failed", "Rotation failed"
        KEY_REAPPEARED = "key.reappeared", "Key found again in Requesty"
        ISSUANCE_ABSENT = "issuance.absent", "Key request proved never created"
        MINT_RATE_LIMITED = "mint.rate_limited", "Key request over the hourly limit"
        APPROVAL_REQUESTED = "approval.requested", "Approval requested"
        APPROVAL_APPROVED = "approval.approved", "Approval granted"
        APPROVAL_DENIED = "approval.denied", "Approval denied"
        APPROVAL_REFUSED = "approval.refused", "Approval request refused"
        APPROVAL_USED = "approval.used", "Approval used"
        ONBOARDING_RETURN_REFUSED = "onboarding.return_refused", "Onboarding return link refused"
        AUDIT_VIEWED = "audit.viewed", "Audit log viewed"
        AUDIT_EXPORTED = "audit.exported", "Audit log exported"
        AUTH_SIGNED_IN = "auth.signed_in", "Signed in"
        AUTH_SIGN_IN_FAILED = "auth.sign_in_failed", "Sign-in failed"
        AUTH_SIGNED_OUT = "auth.signed_out", "Signed out"
        # Edits in Django's admin that change who may mint how much (keys/admin.py).
        POLICY_CHANGED = "policy.changed", "Spending policy changed"
        POLICY_DELETED = "policy.deleted", "Spending policy deleted"
        TEMPLATE_CHANGED = "template.changed", "Onboarding template changed"
        TEMPLATE_DELETED = "template.deleted", "Onboarding template deleted"
        # Edits in Django's admin that change who may do what (portal/accounts/admin.py).
        USER_ACCESS_CHANGED = "user.access_changed", "Access changed"
        USER_PASSWORD_CHANGED = "user.password_changed", "Password changed"  # noqa: S105 (an action name)
        USER_DELETED = "user.deleted", "User deleted"
        GROUP_PERMISSIONS_CHANGED = "group.permissions_changed", "Group permissions changed"
        # Spend (keys/labels.py, keys/alerts.py, keys/idle.py, keys/spend_views.py).
        KEY_LABELLED = "key.labelled", "Labels set in Requesty"
        KEY_LABEL_FAILED = "key.label_failed", "Labels not set"
        SPEND_ALERT_SENT = "spend.alert_sent", "Budget alert sent"
        SPEND_EXPORTED = "spend.exported", "Spend exported"
        KEY_IDLE_NOTIFIED = "key.idle_notified", "Idle key owner asked"
        KEY_KEPT = "key.kept", "Idle key kept"

    class Outcome(models.TextChoices):
        PENDING = "pending"
        SUCCESS = "success"
        DENIED = "denied"
        FAILURE = "failure"
        UNKNOWN = "unknown"

    seq = models.BigIntegerField(unique=True)
    created_at = models.DateTimeField(db_index=True)
    # No database constraint and no cascade: deleting a user must not rewrite (UPDATE) history.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False
    )
    actor_username = models.CharField(max_length=150, blank=True)
    actor_email = models.CharField(max_length=254, blank=True)
    action = models.CharField(max_length=40, choices=Action.choices)
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    issuance = models.ForeignKey(
        "keys.Issuance", null=True, blank=True, on_delete=models.PROTECT, related_name="events"
    )
    key_name = models.CharField(max_length=200, blank=True)
    api_key_id = models.CharField(max_length=64, blank=True)
    monthly_limit = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    manage = models.CharField(max_length=16, blank=True)
    completions = models.CharField(max_length=16, blank=True)
    source_ip = models.GenericIPAddressField(null=True, blank=True)
    upstream_status = models.PositiveSmallIntegerField(null=True, blank=True)
    detail = models.CharField(max_length=500, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        db_table = "keys_auditevent"  # created by the keys app before the audit app existed
        ordering = ["-seq"]
        permissions = [("view_audit_log", "Can review and export the audit log")]
        indexes = [
            # Keyset pagination walks `seq`; each filter gets an index that ends in `seq`.
            models.Index(fields=["actor_username", "seq"], name="audit_actor_seq"),
            # One actor over a period: the period's events of the actor, however long ago (migration 0007).
            models.Index(fields=["actor_username", "created_at"], name="audit_actor_time"),
            models.Index(fields=["action", "seq"], name="audit_action_seq"),
            models.Index(fields=["outcome", "seq"], name="audit_outcome_seq"),
            models.Index(fields=["api_key_id", "seq"], name="audit_key_seq"),
            # Counting one kind of event in the last hour (portal/audit/bounds.py: bounds on refusals and noise).
            models.Index(fields=["action", "created_at"], name="audit_action_time"),
            # The log as the screen shows it by default, without its own events: however many views
            # and exports were recorded since the last other event, the newest page reads a page of
            # rows, not all of them (migration 0008).
            models.Index(fields=["seq"], name="audit_seq_not_own", condition=~models.Q(action__in=OWN_ACTIONS)),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor_username} {self.action} {self.outcome}"

    def save(self, *args, **kwargs):
        """Only ever an INSERT: a saved event refuses, and an unsaved one never overwrites a row."""
        if not self._state.adding:
            raise PermissionError("Audit events are append-only.")
        super().save(*args, **{**kwargs, "force_insert": True})

    def delete(self, *args, **kwargs):
        raise PermissionError("Audit events are append-only.")


class AuditClock(models.Model):
    """Where the log's times are out of `seq` order, as one row (PostgreSQL; portal/audit/periods.py).

    An event normally carries a time no earlier than the event before it (chain.record holds the
    time back to the previous event's, under the append lock). Rows written otherwise (before that
    rule, by an older release during a deploy, by hand) are noted by a database trigger (migration
    0009) for every event followed by an earlier one: between `disorder_from` and `disorder_to`
    times may be out of order; outside them, a period of time is a range of `seq`. None: nowhere."""

    disorder_from = models.DateTimeField(null=True)  # the earliest time of an event that came after a later one
    disorder_to = models.DateTimeField(null=True)  # the latest time of an event an earlier one followed

    def __str__(self) -> str:
        return f"times out of order from {self.disorder_from} to {self.disorder_to}"
