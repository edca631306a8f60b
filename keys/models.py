"""What the portal stores: issuance attempts, issued keys (ids only) and the audit trail.

No model has a field for a key's secret; shared/security.md, invariant I1.
"""

import functools
import uuid

from django.conf import settings
from django.db import connection, models

LEVELS = [("none", "none"), ("read", "read"), ("write", "write")]


def insert(instance: models.Model) -> None:
    """`instance.save(force_insert=True)` without the ORM's per-call query building, for the rows
    every mint writes (issuance, issued key, audit events): that building cost more CPU than the
    statements themselves (docs/performance.md). Defaults and auto_now(_add) are applied as `save`
    applies them. No save signals are sent: only use it for models that have no receivers."""
    sql, fields, returns_pk = _insert_sql(type(instance), connection.vendor)
    params = [field.get_db_prep_save(field.pre_save(instance, True), connection) for field in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        if returns_pk:
            instance.pk = cursor.fetchone()[0]
    instance._state.adding, instance._state.db = False, connection.alias


@functools.cache
def _insert_sql(model: type[models.Model], vendor: str) -> tuple[str, list, bool]:
    qn = connection.ops.quote_name
    pk = model._meta.pk
    returns_pk = isinstance(pk, models.AutoField)  # the database numbers it; a UUID is ours
    fields = [field for field in model._meta.concrete_fields if not (returns_pk and field.primary_key)]
    columns = ", ".join(qn(field.column) for field in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    sql = f"INSERT INTO {qn(model._meta.db_table)} ({columns}) VALUES ({placeholders})"  # noqa: S608 (model metadata)
    return (sql + f" RETURNING {qn(pk.column)}" if returns_pk else sql), fields, returns_pk


class Issuance(models.Model):
    """One attempt to mint a key, committed *before* Requesty is called (the state machine in
    shared/security.md). Its id doubles as the reference shown to users and as the marker in the
    upstream key name that lets reconciliation match keys with certainty."""

    class State(models.TextChoices):
        REQUESTED = "requested"  # committed, Requesty not yet answered
        ISSUED = "issued"  # Requesty created it, record and audit committed
        REJECTED = "rejected"  # a definite no: 4xx or the request never left
        UNKNOWN = "unknown"  # Requesty may have created it; reconciliation decides
        COMPENSATED = "compensated"  # created upstream, then deleted by the portal
        ABSENT = "absent"  # reconciliation proved nothing was created

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    nonce = models.CharField(max_length=64, unique=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    name = models.CharField(max_length=64)
    monthly_limit = models.DecimalField(max_digits=12, decimal_places=2)
    manage = models.CharField(max_length=5, choices=LEVELS)
    completions = models.CharField(max_length=5, choices=LEVELS)
    state = models.CharField(max_length=12, choices=State.choices, default=State.REQUESTED)
    api_key_id = models.CharField(max_length=64, blank=True, default="")
    upstream_status = models.PositiveSmallIntegerField(null=True, blank=True)
    source_ip = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["state", "created_at"])]

    def __str__(self) -> str:
        return f"{self.name} ({self.state})"

    @property
    def reference(self) -> str:
        """Short id for messages and support conversations."""
        return self.id.hex[:12]

    @property
    def upstream_name(self) -> str:
        return f"{self.name} [portal:{self.reference}]"

    @property
    def permissions(self) -> dict[str, str]:
        return {"manage": self.manage, "completions": self.completions}


class IssuedKey(models.Model):
    """A key Requesty created for a portal user: its id and what was asked, never its secret."""

    class Status(models.TextChoices):
        ACTIVE = "active", "active"
        REVOKED = "revoked", "revoked"
        DELETED_UPSTREAM = "deleted", "deleted outside the portal"

    api_key_id = models.CharField(max_length=64, unique=True)
    issuance = models.OneToOneField(Issuance, on_delete=models.PROTECT, related_name="issued_key")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="issued_keys"
    )
    name = models.CharField(max_length=64)
    monthly_limit = models.DecimalField(max_digits=12, decimal_places=2)
    manage = models.CharField(max_length=5, choices=LEVELS)
    completions = models.CharField(max_length=5, choices=LEVELS)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    created_at = models.DateTimeField(auto_now_add=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    # Spend as Requesty last reported it, so a busy "My keys" page does not call Requesty for
    # every row on every load (kept in the database: shared by every portal process).
    spend = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    spend_checked_at = models.DateTimeField(null=True, blank=True)
    # Set when offboarding could not revoke the key upstream; admins see these listed.
    revocation_failed_at = models.DateTimeField(null=True, blank=True)
    # A limit change sent to Requesty whose outcome is not settled yet (set, and committed, before
    # the call). Until settled the key counts at the higher of the two limits (policy.headroom), so
    # an unknown outcome cannot be used to exceed the caps; reconcile_keys settles it from the list.
    pending_limit = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    pending_limit_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]  # newest first; the id breaks ties (keys/listing.py pages so)
        indexes = [
            models.Index(fields=["owner", "status"]),
            # The key list's keyset pages, for everyone ("All keys") and per owner ("My keys").
            models.Index(fields=["created_at", "id"], name="issuedkey_created"),
            models.Index(fields=["owner", "created_at", "id"], name="issuedkey_owner_created"),
        ]
        permissions = [("portal_admin", "Can act as a portal admin (manage rights, any limit)")]

    def __str__(self) -> str:
        return f"{self.name} ({self.api_key_id})"


class AppendOnlyQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise PermissionError("Audit events are append-only.")

    def delete(self):
        raise PermissionError("Audit events are append-only.")


class AuditEvent(models.Model):
    """Who did what, when, from where, and what happened.

    Append-only: the model refuses updates and deletes (and on PostgreSQL a trigger refuses them
    too). Tamper-evident: `seq` numbers events without gaps and `hash` is an HMAC over the previous
    hash and this event's canonical form (keys/audit.py), so a changed, removed or reordered row
    breaks the chain that `manage.py verify_audit` walks. The actor's name and e-mail are copied, so
    renaming or deleting the user later does not rewrite history. Append only via `audit.record`.
    """

    class Action(models.TextChoices):
        MINT_REQUESTED = "mint.requested"
        MINT_ISSUED = "mint.issued"
        MINT_REJECTED = "mint.rejected"
        MINT_UNKNOWN = "mint.unknown"
        MINT_DENIED = "mint.denied"
        MINT_DUPLICATE = "mint.duplicate"
        MINT_RECORD_FAILED = "mint.record_failed"
        KEY_COMPENSATED = "key.compensated"
        KEY_COMPENSATION_FAILED = "key.compensation_failed"
        KEY_LIMIT_REQUESTED = "key.limit_requested"
        KEY_LIMIT_CHANGED = "key.limit_changed"
        KEY_LIMIT_FAILED = "key.limit_failed"
        KEY_REVOKED = "key.revoked"
        KEY_REVOKE_FAILED = "key.revoke_failed"
        KEY_DELETED_UPSTREAM = "key.deleted_upstream"
        ISSUANCE_ABSENT = "issuance.absent"
        MINT_RATE_LIMITED = "mint.rate_limited"
        APPROVAL_REQUESTED = "approval.requested"
        APPROVAL_APPROVED = "approval.approved"
        APPROVAL_DENIED = "approval.denied"
        APPROVAL_REFUSED = "approval.refused"
        APPROVAL_USED = "approval.used"
        ONBOARDING_RETURN_REFUSED = "onboarding.return_refused"
        AUDIT_VIEWED = "audit.viewed"
        AUDIT_EXPORTED = "audit.exported"
        AUTH_SIGNED_IN = "auth.signed_in"
        AUTH_SIGN_IN_FAILED = "auth.sign_in_failed"
        AUTH_SIGNED_OUT = "auth.signed_out"
        # Edits in Django's admin that change who may mint how much (keys/admin.py).
        POLICY_CHANGED = "policy.changed"
        POLICY_DELETED = "policy.deleted"
        TEMPLATE_CHANGED = "template.changed"
        TEMPLATE_DELETED = "template.deleted"
        # Edits in Django's admin that change who may do what (keys/admin.py).
        USER_ACCESS_CHANGED = "user.access_changed"
        USER_PASSWORD_CHANGED = "user.password_changed"  # noqa: S105 (an action name)
        USER_DELETED = "user.deleted"
        GROUP_PERMISSIONS_CHANGED = "group.permissions_changed"

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
    issuance = models.ForeignKey(Issuance, null=True, blank=True, on_delete=models.PROTECT, related_name="events")
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
        ordering = ["-seq"]
        permissions = [("view_audit_log", "Can review and export the audit log")]
        indexes = [
            # Keyset pagination walks `seq`; each filter gets an index that ends in `seq`.
            models.Index(fields=["actor_username", "seq"], name="audit_actor_seq"),
            models.Index(fields=["action", "seq"], name="audit_action_seq"),
            models.Index(fields=["outcome", "seq"], name="audit_outcome_seq"),
            models.Index(fields=["api_key_id", "seq"], name="audit_key_seq"),
            # Counting one kind of event in the last hour (keys/audit.py: bounds on refusals and noise).
            models.Index(fields=["action", "created_at"], name="audit_action_time"),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor_username} {self.action} {self.outcome}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise PermissionError("Audit events are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionError("Audit events are append-only.")


class SpendingPolicy(models.Model):
    """How much the members of one group may mint. A user in several groups gets the most generous
    value of each field; a user in none gets the defaults from settings (keys/policy.py)."""

    group = models.OneToOneField("auth.Group", on_delete=models.CASCADE, related_name="spending_policy")
    max_key_limit = models.DecimalField("maximum monthly limit per key (USD)", max_digits=12, decimal_places=2)
    max_total_limit = models.DecimalField(
        "maximum total of monthly limits across active keys (USD)", max_digits=12, decimal_places=2
    )
    max_active_keys = models.PositiveIntegerField("maximum number of active keys")
    max_completions = models.CharField(
        "highest completions level",
        max_length=5,
        choices=LEVELS,
        default="write",
        help_text="Levels up to this one are allowed.",
    )
    manage_requestable = models.BooleanField(
        "may request manage rights",
        default=False,
        help_text="Whether members may ask (through an approval) for a key with manage other than none.",
    )

    class Meta:
        verbose_name_plural = "spending policies"

    def __str__(self) -> str:
        return f"Policy for {self.group}"


class ApprovalRequest(models.Model):
    """A request for more than the requester's policy allows. Approval grants a one-time right to
    mint exactly these values within PORTAL_APPROVAL_DAYS; it never mints and holds no secret."""

    class Status(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        DENIED = "denied"
        USED = "used"

    requester = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="approval_requests")
    name = models.CharField(max_length=64)
    monthly_limit = models.DecimalField(max_digits=12, decimal_places=2)
    manage = models.CharField(max_length=5, choices=LEVELS)
    completions = models.CharField(max_length=5, choices=LEVELS)
    reason = models.TextField(max_length=1000)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="approvals_decided"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    comment = models.TextField(max_length=1000, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    issuance = models.OneToOneField(Issuance, null=True, blank=True, on_delete=models.SET_NULL, related_name="approval")
    # Asked for from an onboarding link: after minting, "Continue onboarding" still applies.
    onboarding_template = models.ForeignKey(
        "OnboardingTemplate", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "created_at"])]

    def __str__(self) -> str:
        return f"{self.name} for {self.requester} ({self.status})"

    @property
    def is_usable(self) -> bool:
        from django.utils import timezone

        return self.status == self.Status.APPROVED and self.expires_at is not None and self.expires_at > timezone.now()

    @property
    def display_status(self) -> str:
        if self.status == self.Status.APPROVED and not self.is_usable:
            return "expired"
        return self.status


class OnboardingTemplate(models.Model):
    """Values an onboarding link (`/keys/new/?template=<slug>`) fills into the form."""

    slug = models.SlugField(unique=True)
    name_pattern = models.CharField(max_length=64, help_text="Key name; {username} is replaced, e.g. {username}-dev")
    monthly_limit = models.DecimalField(max_digits=12, decimal_places=2)
    manage = models.CharField(max_length=5, choices=LEVELS, default="none")
    completions = models.CharField(max_length=5, choices=LEVELS, default="write")
    return_url = models.URLField(
        blank=True, help_text="Where “Continue onboarding” leads; its host must be in ONBOARDING_RETURN_HOSTS."
    )
    description = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class OIDCIdentity(models.Model):
    """Who a portal user is at an OpenID Connect provider. The issuer and subject (`iss`, `sub`)
    never change for a person, unlike their e-mail address, so a new address at the provider
    updates the same portal user instead of creating a second one (keys/sso.py)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="oidc_identities")
    issuer = models.CharField(max_length=255)
    subject = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)
    last_sign_in_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "OpenID Connect identity"
        verbose_name_plural = "OpenID Connect identities"
        constraints = [models.UniqueConstraint(fields=["issuer", "subject"], name="oidc_identity_issuer_subject")]

    def __str__(self) -> str:
        return f"{self.subject} at {self.issuer}"


class SSOGroupGrant(models.Model):
    """A group membership that single sign-on granted. Sign-in recomputes memberships from the
    provider's group claims and only ever removes the ones recorded here: memberships granted by
    hand in Django's admin are never taken away by a sign-in."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sso_group_grants")
    group = models.ForeignKey("auth.Group", on_delete=models.CASCADE, related_name="sso_grants")
    granted_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "group membership granted by single sign-on"
        verbose_name_plural = "group memberships granted by single sign-on"
        constraints = [models.UniqueConstraint(fields=["user", "group"], name="sso_group_grant_user_group")]

    def __str__(self) -> str:
        return f"{self.user} in {self.group}"
